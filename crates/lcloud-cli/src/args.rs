//! The `lcloud` command line: every command, argument and help text, as clap parses them
//! (`main.rs` runs them).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub(crate) const AFTER_HELP: &str = "\
Examples:
  lcloud init --alias alice --cloud notes       create an identity, a store and a cloud
  lcloud set /users/alice '{\"visits\": 0}'       write a value (one signed experience)
  lcloud incr /users/alice/visits               increment a counter
  lcloud state /users                           read the current state at a path
  lcloud state --at alice:3,bob:5               time travel to a vector clock
  lcloud export /tmp/alice.bundle               write a bundle for another node
  lcloud import /tmp/bob.bundle                 merge another node's bundle

Paths are JSON Pointers (RFC 6901): /users/alice/visits; \"\" is the whole document.
Clocks are NODE:SEQ,NODE:SEQ where NODE is an alias or a hex prefix of a node id.";

/// λCLOUD: replicated state without a coordinator. Strong eventual consistency and causal
/// consistency, not linearizability.
#[derive(Parser, Debug)]
#[command(name = "lcloud", version, after_help = AFTER_HELP, max_term_width = 100)]
pub(crate) struct Cli {
    /// The node's directory: identity, store and metadata.
    #[arg(long, global = true, env = "LCLOUD_DIR", value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Talk to a running node's HTTP API (e.g. http://127.0.0.1:7400) instead of opening the
    /// store: writes, `state` and `root` without cut options, `status`, `clock` and `heads`.
    /// (With `log`, a NODE name instead shows only that node's chain.)
    #[arg(
        long = "node",
        id = "node_url",
        global = true,
        env = "LCLOUD_NODE",
        value_name = "URL"
    )]
    pub(crate) node: Option<String>,
    /// With --node: send the API token in this file (else `LCLOUD_TOKEN`, else the admin token
    /// in this node's directory, `DIR/admin.token`).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// With an https:// --node: trust this PEM certificate (a node's self-signed one, or a
    /// private CA) instead of the public web's roots.
    #[arg(long, global = true, env = "LCLOUD_CA_CERT", value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options that pick the cut (and view) to read.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct CutArgs {
    /// Read the state at this vector clock, e.g. `alice:3,bob:5`.
    #[arg(long, value_name = "CLOCK", conflicts_with_all = ["heads", "seen_by"])]
    pub(crate) at: Option<String>,
    /// Read the state at these heads: comma-separated experience id prefixes.
    #[arg(long, value_name = "IDS", conflicts_with = "seen_by")]
    pub(crate) heads: Option<String>,
    /// Leave out this node's ops (its experiences' links stay).
    #[arg(long, value_name = "NODE")]
    pub(crate) without: Option<String>,
    /// The state NODE saw when it wrote its experience number SEQ.
    #[arg(long, value_name = "NODE@SEQ")]
    pub(crate) seen_by: Option<String>,
}

/// What `lcloud init` creates.
#[derive(Args, Debug)]
pub(crate) struct InitArgs {
    /// A local name for this node.
    #[arg(long)]
    pub(crate) alias: Option<String>,
    /// The cloud's name.
    #[arg(long, default_value = "default")]
    pub(crate) cloud: String,
    /// A node allowed to write besides this one (repeatable). A cloud is members-only: its
    /// creator adds members later with `lcloud member add`, and peers that are not members are
    /// disconnected at once.
    #[arg(long = "member", value_name = "NODEID")]
    pub(crate) members: Vec<String>,
    /// Make an open cloud instead: anyone who holds its genesis (a bundle of it) may connect
    /// and write. Peers without the genesis still cannot connect (docs/security.md).
    #[arg(long, conflicts_with = "members")]
    pub(crate) open: bool,
    /// Leave out a forking author's ops from the fork point on (default: fold both branches).
    #[arg(long)]
    pub(crate) quarantine_forks: bool,
    /// The initial document, as JSON (default `{}`).
    #[arg(long, value_name = "JSON")]
    pub(crate) initial: Option<String>,
}

/// What `lcloud compact` keeps of the experiences it drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RetainArg {
    /// Each dropped experience's signed header.
    Headers,
    /// Nothing: the state at the checkpoint stands for them.
    Checkpoint,
}

/// What a node keeps of the history below its final checkpoints (`--retain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum NodeRetain {
    /// Everything.
    Full,
    /// The signed headers of what it drops.
    Headers,
    /// Nothing of what it drops.
    Checkpoint,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Create this node's identity, a store and a new cloud (with its genesis).
    #[command(
        after_help = "Examples:\n  lcloud init --alias alice --cloud notes\n  lcloud init --member 3fa2… --member 9bc1…   (only these nodes and you may write)"
    )]
    Init(InitArgs),
    /// Join an existing cloud from a bundle (any bundle holds the genesis).
    ///
    /// A shallow bundle (`lcloud export --shallow`) starts the node from the cloud's deepest
    /// final checkpoint instead of the whole history: the state there, the experiences it
    /// still names, and everything since. Before anything is stored, every signature is
    /// checked, and the members' attestations must make that checkpoint final with the root
    /// of the state the bundle carries.
    #[command(
        after_help = "Examples:\n  lcloud join /tmp/alice.bundle --alias bob\n  lcloud join --shallow /tmp/alice.shallow   (from the last final checkpoint)\n  LCLOUD_TOKEN=… lcloud join --shallow https://alice.example:7400   (from a running node, read scope)"
    )]
    Join {
        /// The bundle file, or with --shallow a running node's API URL (its token from
        /// LCLOUD_TOKEN or --token-file, read scope).
        #[arg(value_name = "BUNDLE_OR_NODE")]
        file: PathBuf,
        /// Require a shallow bundle (a bundle of the whole history is refused).
        #[arg(long)]
        shallow: bool,
        /// A local name for this node.
        #[arg(long)]
        alias: Option<String>,
    },
    /// Print this node's id (creating the identity if there is none yet).
    #[command(
        after_help = "Example:\n  lcloud id     (give it to a cloud's creator to be added with `lcloud member add`)"
    )]
    Id,
    /// Give a node a local name, usable wherever a NODE is asked for (clocks, --without, …).
    #[command(
        after_help = "Example:\n  lcloud alias bob 9bc1e2…(64 hex digits)\n  lcloud state --at alice:3,bob:2"
    )]
    Alias {
        /// The name.
        name: String,
        /// The node's id (64 hex digits).
        node: String,
    },
    /// Write JSON at a path.
    #[command(
        after_help = "Examples:\n  lcloud set /title '\"hello\"'\n  lcloud set /users/alice '{\"visits\": 0}'"
    )]
    Set {
        /// JSON Pointer.
        path: String,
        /// JSON value.
        #[arg(value_name = "JSON")]
        value: String,
    },
    /// Add N (default 1; negative to subtract) to the counter at a path.
    #[command(
        allow_negative_numbers = true,
        after_help = "Examples:\n  lcloud incr /visits\n  lcloud incr /stock -3"
    )]
    Incr {
        /// JSON Pointer.
        path: String,
        /// The amount.
        #[arg(default_value_t = 1)]
        n: i64,
    },
    /// Add a JSON value to the set at a path (add wins over a concurrent remove).
    #[command(
        after_help = "Examples:\n  lcloud add /tags '\"rust\"'\n  lcloud add /members '{\"name\": \"ada\"}'"
    )]
    Add {
        /// JSON Pointer.
        path: String,
        /// JSON value.
        #[arg(value_name = "JSON")]
        value: String,
    },
    /// Remove a JSON value from the set at a path.
    #[command(
        after_help = "Example:\n  lcloud remove /tags '\"rust\"'   (removes the adds this node has seen; a concurrent add wins)"
    )]
    Remove {
        /// JSON Pointer.
        path: String,
        /// JSON value.
        #[arg(value_name = "JSON")]
        value: String,
    },
    /// Delete whatever is at a path (and below it).
    #[command(
        after_help = "Examples:\n  lcloud del /users/alice\n  lcloud del ''      (the whole document)"
    )]
    Del {
        /// JSON Pointer.
        path: String,
    },
    /// Insert into the list or text at a path, before the element at INDEX (the length: at
    /// the end). A string goes into a text as its characters; anything else goes into a
    /// list as one element. On an empty path it makes a list (`splice` makes a text).
    #[command(
        after_help = "Examples:\n  lcloud insert /todo 0 '\"buy milk\"'     (a list: one element, first)\n  lcloud insert /todo 1 '{\"done\": false}'\n  lcloud splice /para 0 0 'Hello'         (a text)\n  lcloud insert /para 5 '\", world\"'      (characters into the text)\nIndexes count Unicode scalar values in text. Concurrent inserts at one place merge\nwithout interleaving."
    )]
    Insert {
        /// JSON Pointer.
        path: String,
        /// Before which element (0: the start).
        index: usize,
        /// JSON value.
        #[arg(value_name = "JSON")]
        value: String,
    },
    /// Delete COUNT elements (default 1) of the list or text at a path, from INDEX on.
    #[command(after_help = "Examples:
  lcloud delete /todo 0
  lcloud delete /para 5 7")]
    Delete {
        /// JSON Pointer.
        path: String,
        /// The first element deleted (0: the first).
        index: usize,
        /// How many.
        #[arg(default_value_t = 1)]
        count: usize,
    },
    /// Delete DELETE characters of the text at a path from INDEX on, and insert TEXT there.
    /// On an empty path it makes a text.
    #[command(after_help = "Examples:
  lcloud splice /para 0 0 'Hello world'   (make the text)
  lcloud splice /para 6 5 'there'         (Hello there)
Indexes count Unicode scalar values.")]
    Splice {
        /// JSON Pointer.
        path: String,
        /// From which character (0: the first).
        index: usize,
        /// How many characters to delete.
        delete: usize,
        /// What to insert (may be empty).
        text: String,
    },
    /// Move the list element at FROM so that it ends at index TO. Of concurrent moves of one
    /// element, one wins (the same on every node); a concurrent delete wins over a move.
    #[command(after_help = "Example:
  lcloud move /todo 3 0   (the fourth element becomes the first)")]
    Move {
        /// JSON Pointer.
        path: String,
        /// The element's index now.
        from: usize,
        /// Its index afterwards.
        to: usize,
    },
    /// Read ops from stdin, one JSON object per line, and write them as one experience.
    #[command(
        after_help = "Each line is one op:\n  {\"op\":\"set\",\"path\":\"/a\",\"value\":1}\n  {\"op\":\"incr\",\"path\":\"/n\",\"by\":2}\n  {\"op\":\"add\",\"path\":\"/s\",\"value\":\"x\"}\n  {\"op\":\"remove\",\"path\":\"/s\",\"value\":\"x\"}\n  {\"op\":\"del\",\"path\":\"/a\"}\n  {\"op\":\"splice\",\"path\":\"/t\",\"index\":0,\"delete\":0,\"text\":\"hi\"}\n  {\"op\":\"insert\",\"path\":\"/l\",\"index\":0,\"value\":1}\n  {\"op\":\"delete\",\"path\":\"/l\",\"index\":0,\"count\":1}\n  {\"op\":\"move\",\"path\":\"/l\",\"from\":1,\"to\":0}\nExample:\n  printf '%s\\n' '{\"op\":\"set\",\"path\":\"/a\",\"value\":1}' '{\"op\":\"incr\",\"path\":\"/n\"}' | lcloud batch"
    )]
    Batch,
    /// Manage who may write: add, remove, promote to admin, demote, list.
    #[command(
        after_help = "Examples:\n  lcloud member add 9bc1…(64 hex digits)   (admins only)\n  lcloud member remove lost-laptop\n  lcloud member list"
    )]
    Member {
        #[command(subcommand)]
        action: MemberAction,
    },
    /// This node's signing key: rotate it.
    #[command(after_help = "Example:\n  lcloud key rotate")]
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Print the state (the whole document, or at PATH), now or at a cut.
    #[command(
        after_help = "Examples:\n  lcloud state\n  lcloud state /users --at alice:3,bob:2\n  lcloud state --without bob\n  lcloud state --seen-by alice@4"
    )]
    State {
        /// JSON Pointer (default: the whole document).
        path: Option<String>,
        #[command(flatten)]
        cut: CutArgs,
    },
    /// Show every concurrent value kept at a path, in canonical order (the last one shows),
    /// with the experience that wrote each and its author: now, or at a cut or view.
    #[command(
        after_help = "Examples:\n  lcloud conflicts /title\n  lcloud conflicts /title --at alice:3,bob:2"
    )]
    Conflicts {
        /// JSON Pointer.
        path: String,
        #[command(flatten)]
        cut: CutArgs,
    },
    /// Print the state root (BLAKE3 of the folded state), now or at a cut.
    #[command(
        after_help = "Examples:\n  lcloud root                 (compare with another node's: equal roots, equal state)\n  lcloud root --at alice:3"
    )]
    Root {
        #[command(flatten)]
        cut: CutArgs,
    },
    /// What this node holds and how far it is final: root, experiences, heads, parked, fork
    /// proofs, and the stable frontier (what every current member has seen, so no later
    /// experience can come before it), each member's part, and the member furthest behind,
    /// which holds finality back. Nothing is final in an open cloud.
    #[command(
        after_help = "Examples:\n  lcloud status\n  lcloud --node http://127.0.0.1:7400 status --json"
    )]
    Status,
    /// Print the vector clock of everything this node holds.
    #[command(
        after_help = "Example:\n  lcloud clock      -> alice:4,bob:2   (usable with --at and diff)"
    )]
    Clock,
    /// Print the heads: experiences nothing else builds on yet.
    #[command(
        after_help = "Example:\n  lcloud heads      (ids usable as @ID with diff, or with --heads)"
    )]
    Heads,
    /// Show what changed between two cuts. A CUT is `now`, a clock (`alice:3,bob:5`) or
    /// heads (`@ID,ID`, id prefixes).
    #[command(after_help = "Examples:\n  lcloud diff alice:2 now\n  lcloud diff @3fa2 @9bc1")]
    Diff {
        /// The earlier cut.
        from: String,
        /// The later cut.
        to: String,
    },
    /// Show the history, newest first (canonical order reversed), one lane per node; forks
    /// and rejected contract calls marked. `--node NODE` (an alias or id prefix) shows only
    /// that node's chain. `--limit N` shows a page of the newest N and says how to get the
    /// next; against a running node (`--node URL`) the node answers the page from its memory.
    #[command(
        after_help = "Examples:\n  lcloud log --graph\n  lcloud log --node bob      (only bob's chain)\n  lcloud log --graph --limit 1000\n  lcloud log --limit 1000 --before 41.9f2c…   (the page after, as the last one said)"
    )]
    Log {
        /// Draw one lane per node.
        #[arg(long)]
        graph: bool,
        /// Show at most this many experiences (1 to 10 000), the newest first.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: Option<u64>,
        /// Start after this cursor (`DEPTH.ID`, printed at the end of a page).
        #[arg(long, value_name = "CURSOR")]
        before: Option<String>,
    },
    /// Write a bundle of experiences for another node (offline merge).
    #[command(
        after_help = "Examples:\n  lcloud export /tmp/all.bundle\n  lcloud export /tmp/new.bundle --since alice:10,bob:7\n  lcloud export --shallow /tmp/from-checkpoint.shallow\n  lcloud export --proof now /tmp/now.proof        (then, anywhere: lcloud verify-proof /tmp/now.proof)\n  lcloud export --proof alice:3,bob:2 /tmp/then.proof"
    )]
    Export {
        /// Where to write it.
        file: PathBuf,
        /// A shallow bundle: the state at the deepest final checkpoint, its members'
        /// attestations and everything since, for `lcloud join --shallow` (not for merging
        /// into a node that has the history).
        #[arg(long, conflicts_with_all = ["since", "proof"])]
        shallow: bool,
        /// Only what is not already within this clock.
        #[arg(long, value_name = "CLOCK", conflicts_with = "proof")]
        since: Option<String>,
        /// A proof of the state root at CUT (`now`, a clock like `alice:3,bob:5`, or heads
        /// `@ID,ID`): what anyone needs to fold that cut again and check its root with
        /// `lcloud verify-proof`, no store or network needed. It starts from the deepest final
        /// checkpoint when the cut contains it (the state there and the attestations that
        /// prove it), else from the genesis (docs/format.md, "Proofs").
        #[arg(long, value_name = "CUT")]
        proof: Option<String>,
        /// With --proof: carry the whole history up to the cut, even where a final checkpoint
        /// would do.
        #[arg(long, requires = "proof")]
        full: bool,
    },
    /// Find where two nodes' states first differ: the first experience, in the fold's
    /// canonical order, after which their roots at the same cut differ. Compares roots at
    /// prefixes of that order (about log₂ n comparisons), each node answering for itself as
    /// `lcloud root --at` does, over the experiences both hold. A node is a directory (stop
    /// its node first) or a running node's API URL (read scope; the token as for --node).
    #[command(
        after_help = "Examples:\n  lcloud bisect ./alice ./bob\n  lcloud bisect http://10.0.0.1:7400 http://10.0.0.2:7400 --token-a a.token --token-b b.token\n\nPrints the experience, the root both have just before it, and each one's root with it\n(--json: `diverged`, `experience`, `agree_at`, `differ_at`, `comparisons`)."
    )]
    Bisect {
        /// One node: its directory, or its API URL.
        a: String,
        /// The other.
        b: String,
        /// The API token of A, when A is a URL, in this file (else as for --node).
        #[arg(long, value_name = "FILE")]
        token_a: Option<PathBuf>,
        /// The API token of B, when B is a URL, in this file (else as for --node).
        #[arg(long, value_name = "FILE")]
        token_b: Option<PathBuf>,
    },
    /// Check a proof written by `lcloud export --proof` and print the root it proves: every
    /// signature, hash and link, the checkpoint's attestations, and the fold of the cut. Needs
    /// no node directory and no network; exits non-zero naming what failed.
    #[command(
        name = "verify-proof",
        after_help = "Example:\n  lcloud verify-proof /tmp/now.proof     (compare the root with `lcloud root --at CUT` on any node)"
    )]
    VerifyProof {
        /// The proof file.
        file: PathBuf,
    },
    /// Verify and merge a bundle. Reports new, already known, parked and rejected (by reason).
    #[command(after_help = "Example:\n  lcloud import /tmp/bob.bundle")]
    Import {
        /// The bundle file.
        file: PathBuf,
    },
    /// Recompute every hash, signature and link, and the state root.
    #[command(
        after_help = "Example:\n  lcloud verify     (exits non-zero naming the first bad experience)"
    )]
    Verify,
    /// Drop the history below the deepest final checkpoint (docs/store.md, "Compaction").
    ///
    /// Keeps the state at the checkpoint (which every member attested with the same root),
    /// each member's last experience below it, membership changes, and the experiences the
    /// current state still names; the rest of the history below the checkpoint goes. The
    /// store's root is unchanged (checked before the old file is replaced). From then on,
    /// time travel, views and diffs reach back to the checkpoint and refuse anything
    /// earlier, naming the earliest cut held, and an experience that builds on a dropped one
    /// is refused as too old to merge. Stop the node that holds the directory first.
    #[command(after_help = "Examples:
  lcloud compact                      (keeps each dropped experience's signed header)
  lcloud compact --retain checkpoint  (keeps nothing of them: the smallest store)")]
    Compact {
        /// What to keep of the experiences dropped: `headers` keeps each one's signed header
        /// (about 250 bytes, its ops left out), so `lcloud verify` still checks every chain
        /// link and signature and a fork below the checkpoint stays provable; `checkpoint`
        /// keeps nothing of them.
        #[arg(long, value_enum, default_value_t = RetainArg::Headers)]
        retain: RetainArg,
    },
    /// Open the time-travel debugger on this directory's store: starts a node that serves
    /// reads only, on loopback, with no network, prints the page's address (with a read
    /// token, valid 12 hours, revoked when it stops) and opens it in your browser (the
    /// program $BROWSER names, else the desktop's default). The page shows the history one
    /// lane per node, the state at any cut, diffs between cuts and who wrote each value.
    /// Stop it with Ctrl-C. A running node serves the same page at /ui (`lcloud node run`
    /// prints it).
    #[command(
        after_help = "Examples:\n  lcloud ui\n  lcloud ui --no-open --api 127.0.0.1:7500   (then open the printed http://127.0.0.1:7500/ui#token=… address)\n  BROWSER=firefox lcloud ui"
    )]
    Ui {
        /// Where the page and its API listen (loopback; port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        api: std::net::SocketAddr,
        /// Only print the page's address; do not start a browser.
        #[arg(long)]
        no_open: bool,
    },
    /// Give the store file's free pages back to the file system (docs/store.md, "Closing").
    ///
    /// redb keeps the pages that earlier versions of its tables used, for later commits, and
    /// grows its file by regions; a node's clean stop gives them back for files up to 256 MiB,
    /// this command for any size. Nothing stored changes. Stop the node that holds the
    /// directory first.
    #[command(after_help = "Example:\n  lcloud vacuum   (prints the file's size before and after)")]
    Vacuum,
    /// List fork proofs (two signed experiences by one author at one seq) and check them.
    #[command(
        after_help = "Example:\n  lcloud forks --json   (the signed headers, hex, for anyone to check)"
    )]
    Forks,
    /// Play the seed story on three local nodes with real stores: writes, a partition, offline
    /// merge by bundles, convergence to one state root, time travel, one node's chain.
    #[command(
        after_help = "Example:\n  lcloud demo                      (in a new temporary directory)\n  lcloud demo --dir /tmp/mydemo    (keep the nodes somewhere you choose)"
    )]
    Demo {
        /// Which story: `seed` (the default) or `contracts` (the bank contract: two
        /// partitioned nodes spend one balance; after the heal exactly the spends that fit
        /// in canonical order are kept, on every node).
        #[arg(default_value = "seed", value_parser = ["seed", "contracts"])]
        story: String,
        /// At the end, leave a node running that serves the time-travel debugger on alice's
        /// store (reads only, loopback, no network: `lcloud ui`), and print its address.
        /// Without it the demo stops everything it started.
        #[arg(long)]
        keep: bool,
    },
    /// Deploy, list and read WebAssembly contracts (docs/contracts.md).
    #[command(
        after_help = "Examples:\n  lcloud contract deploy bank.wasm --name bank\n  lcloud contract list\n  lcloud contract state bank balance/alice"
    )]
    Contract {
        #[command(subcommand)]
        action: ContractAction,
    },
    /// Call a contract's function as one signed experience, and print whether the fold
    /// accepted it or rejected it and why (exit 3 when rejected). The outcome is the fold's
    /// as of now: a concurrent call that sorts before it and arrives later can still change
    /// it, the same way on every node.
    #[command(
        after_help = "Examples:\n  lcloud call bank mint '{\"to\": \"alice\", \"amount\": 100}'\n  lcloud call bank transfer '{\"from\": \"alice\", \"to\": \"bob\", \"amount\": 30}' --fuel 100000"
    )]
    Call {
        /// The contract: its local name, or a prefix of its id.
        contract: String,
        /// The function.
        function: String,
        /// The arguments, as JSON (default `{}`).
        #[arg(value_name = "ARGS_JSON")]
        args: Option<String>,
        /// Fuel for the call (signed into the experience): one per WebAssembly instruction
        /// run, plus host calls (docs/contracts.md). Default 10 000 000.
        #[arg(long, value_name = "N")]
        fuel: Option<u64>,
    },
    /// Run this node as a daemon: store, peer-to-peer sync and the HTTP/JSON API.
    #[command(
        after_help = "Examples:\n  lcloud node run --listen /ip4/0.0.0.0/tcp/7401 --api 127.0.0.1:7400\n  lcloud node run --listen /ip4/127.0.0.1/tcp/0 --peer /ip4/10.0.0.2/tcp/7401\n\nThe node prints `p2p ADDR` for each listen address and `api http://ADDR`; give another\nnode one of the p2p addresses as --peer. SIGTERM or Ctrl-C stops it cleanly. Only the\naddresses you give are dialed (no discovery)."
    )]
    Node {
        #[command(subcommand)]
        action: NodeAction,
    },
    /// Make, list and revoke the tokens a running node's API asks for (docs/security.md).
    #[command(
        after_help = "Examples:\n  lcloud token create --scope read --name dashboard --expires 30d\n                              lcloud token list\n  lcloud token revoke dashboard\n                              LCLOUD_TOKEN=$(lcloud token create --scope write) lcloud --node http://127.0.0.1:7400 set /a 1"
    )]
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenAction {
    /// Make a token and print it (the only time it is shown: the node keeps its hash).
    Create {
        /// What it may do: `read` (state, history, events), `write` (also ops and contract
        /// calls) or `admin` (also imports, deploys, membership, the debug routes).
        #[arg(long, value_name = "SCOPE", default_value = "read")]
        scope: String,
        /// A name to know it by (default: the scope and the time).
        #[arg(long)]
        name: Option<String>,
        /// How long it works, e.g. `30d`, `12h`, `90m` (default: until revoked).
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List the tokens: id, scope, name, and whether each still works.
    List,
    /// Revoke a token (or every token of a name), effective at the running node's next request.
    Revoke {
        /// The token's id (8 hex digits, from `lcloud token list`) or name.
        which: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum NodeAction {
    /// Run the node until SIGTERM or Ctrl-C.
    Run {
        /// A peer-to-peer listen address (repeatable).
        #[arg(long, value_name = "MULTIADDR", default_value = "/ip4/127.0.0.1/tcp/0")]
        listen: Vec<String>,
        /// A peer to connect to and keep connected (repeatable).
        #[arg(long = "peer", value_name = "MULTIADDR")]
        peers: Vec<String>,
        /// Where the HTTP/JSON API listens.
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:7400")]
        api: std::net::SocketAddr,
        /// A host name the API answers to (repeatable), besides IP addresses and `localhost`.
        /// Requests naming any other host are refused (403), as are requests from web pages
        /// of other origins: a page you visit cannot use your node through your browser.
        #[arg(long, value_name = "NAME")]
        api_host: Vec<String>,
        /// Seconds between anti-entropy rounds with every peer.
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        sync_every: f64,
        /// Also find peers on the local network with mDNS and connect to them. Off by
        /// default: without it the node reaches no address you did not give. Peers found this
        /// way are held to the same rules (non-members are disconnected at once).
        #[arg(long)]
        mdns: bool,
        /// Serve the `/debug` routes too (an isolation switch that cuts the node off its
        /// peers, the raw heads, the state hash), admin tokens only: for demos and the chaos
        /// harness.
        #[arg(long)]
        debug_api: bool,
        /// What the node keeps of the history below its final checkpoints. `full` (the
        /// default) keeps everything: time travel reaches back to the genesis and any peer,
        /// however far behind, can catch up from this node; compaction gives both up, so it
        /// is the operator's choice. `headers` compacts each time enough history lies below a
        /// new final checkpoint (as `lcloud compact` does), keeping each dropped experience's
        /// signed header; `checkpoint` keeps nothing of them. Memory then holds the state and
        /// the history since the last final checkpoint, not the whole history.
        #[arg(long, value_enum, default_value_t = NodeRetain::Full)]
        retain: NodeRetain,
        /// A web origin whose pages may call the API from a browser (repeatable), e.g.
        /// `https://app.example`: answered with CORS headers, its requests still need a token.
        /// Off by default: only this node's own pages.
        #[arg(long, value_name = "ORIGIN")]
        cors: Vec<String>,
        /// Serve the API over HTTPS with this PEM certificate chain (needs --tls-key).
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Most API connections open at once; past it a new connection gets 503 and is
        /// closed. Lowered to fit the process's descriptor limit.
        #[arg(long, value_name = "N", default_value_t = lcloud_node::serve::CONNECTIONS_MAX)]
        max_connections: usize,
        /// Most API connections open at once from one IP address.
        #[arg(long, value_name = "N", default_value_t = lcloud_node::serve::PER_ADDRESS_MAX)]
        max_connections_per_address: usize,
        /// Most API requests one token may make per second (as many at once); past it the
        /// answer is 429 with Retry-After. 0: no limit.
        #[arg(long, value_name = "N", default_value_t = 10_000)]
        token_rate: u32,
        /// Longest wait for a request's header, from the connection's start or the previous
        /// answer (idle connections close after it), e.g. `10s`.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
        header_timeout: std::time::Duration,
        /// Longest wait for the next bytes of a request body.
        #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
        body_timeout: std::time::Duration,
        /// Longest an answer may wait for the client to read it (then the connection closes).
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
        write_timeout: std::time::Duration,
    },
}

/// A positive duration such as `10s`, `500ms` or `2m`.
pub(crate) fn duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than zero".into()),
        Err(e) => Err(format!("{e} (e.g. 10s, 500ms, 2m)")),
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum ContractAction {
    /// Deploy a WebAssembly module as a contract (one signed experience). Every node checks
    /// it the same way; a module that breaks a rule is rejected, naming the rule.
    Deploy {
        /// The module (`.wasm`).
        file: PathBuf,
        /// A local name for the contract (like a node alias: only on this node).
        #[arg(long)]
        name: Option<String>,
        /// The arguments of the contract's `init` function, as JSON (default `{}`).
        #[arg(long, value_name = "JSON")]
        init: Option<String>,
        /// Fuel for `init` (default 10 000 000).
        #[arg(long, value_name = "N")]
        fuel: Option<u64>,
    },
    /// List the deployed contracts: name, id, who deployed it, size, keys in its state.
    List,
    /// Print a contract's state, or the value under KEY.
    State {
        /// The contract: its local name, or a prefix of its id.
        contract: String,
        /// One key of its state.
        key: Option<String>,
    },
    /// Who set KEY of a contract's state to the value it holds, and what it held before: each
    /// change with the call (or the deploy) that made it, in canonical order, the last one
    /// the writer of the value. Now, or at a cut or view. The fold is run again from its last
    /// checkpoint at which KEY held another value, so older changes may be left out (said).
    #[command(
        after_help = "Examples:\n  lcloud contract writes bank balance/alice\n  lcloud contract writes bank balance/alice --at alice:3,bob:2\n  lcloud --node http://127.0.0.1:7400 contract writes bank balance/alice --json"
    )]
    Writes {
        /// The contract: its local name, or a prefix of its id.
        contract: String,
        /// The key in its state.
        key: String,
        #[command(flatten)]
        cut: CutArgs,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum MemberAction {
    /// Allow NODE to write (admins only). Also re-admits a removed node.
    #[command(
        after_help = "Example:\n  lcloud member add 9bc1…(64 hex digits, from `lcloud id` on that node)"
    )]
    Add {
        /// The node's id (64 hex digits) or its alias.
        node: String,
    },
    /// Take away NODE's right to write, and its admin right (admins only; never the cloud's
    /// creator). Peers stop syncing with it once they see the removal. What it wrote that the
    /// removal has in its past stays; what it wrote concurrently (not yet seen by the remover)
    /// is left out of the state on every node.
    #[command(after_help = "Example:\n  lcloud member remove lost-laptop")]
    Remove {
        /// The node's id (64 hex digits) or its alias.
        node: String,
    },
    /// Make NODE an admin (and a member): it may then change membership (admins only).
    Promote {
        /// The node's id (64 hex digits) or its alias.
        node: String,
    },
    /// Take away NODE's admin right; it stays a member (admins only; never the creator).
    Demote {
        /// The node's id (64 hex digits) or its alias.
        node: String,
    },
    /// List who may write and who administers now, who was removed, and why each may write
    /// (or say the cloud is open).
    List,
}

#[derive(Subcommand, Debug)]
pub(crate) enum KeyAction {
    /// Hand this node's rights to a new key, and stop writing with the old one. Writes one
    /// experience, signed by the old key, naming the new one; then the directory switches to
    /// the new key (`identity.key`), and its chain starts again under it. Anything the old
    /// key signs afterwards (a stolen copy, a restored backup) is refused, or left out of the
    /// state if it was written unseen. A crash in between is finished on the next start. On a
    /// running node (it holds the store), go through its API with `--node URL` and an admin
    /// token: the node writes the rotation, switches, and starts its network again under the
    /// new key.
    #[command(
        after_help = "Examples:\n  lcloud key rotate                                  (a stopped node's directory)\n  lcloud --node http://127.0.0.1:7400 key rotate     (a running node)"
    )]
    Rotate,
}
