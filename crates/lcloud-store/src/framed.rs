//! How a shallow bundle and a proof begin: a 16-byte magic, a section's length (u64 LE), the
//! section, and a BLAKE3 checksum of everything before it; the rest of the file follows.

/// The magic, then `section` framed as above.
pub(crate) fn write(magic: &[u8; 16], section: &[u8], rest_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 8 + section.len() + 32 + rest_len);
    out.extend_from_slice(magic);
    out.extend_from_slice(&(section.len() as u64).to_le_bytes());
    out.extend_from_slice(section);
    let check = blake3::hash(&out);
    out.extend_from_slice(check.as_bytes());
    out
}

/// The section of `bytes` (whose magic the caller checked) and what follows it, or why the
/// frame is damaged; `what` names the section, which may take 1 to `max` bytes.
pub(crate) fn read<'a>(
    bytes: &'a [u8],
    what: &str,
    max: u64,
) -> Result<(&'a [u8], &'a [u8]), String> {
    let len = bytes
        .get(16..24)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        .ok_or("it ends in its header")?;
    if len == 0 || len > max {
        return Err(format!(
            "its {what} claims {len} bytes (1 to {max} allowed)"
        ));
    }
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| l.checked_add(24))
        .filter(|e| e.checked_add(32).is_some_and(|t| t <= bytes.len()))
        .ok_or_else(|| format!("its {what} runs past the end of the file"))?;
    if blake3::hash(&bytes[..end]).as_bytes() != &bytes[end..end + 32] {
        return Err(format!("the {what}'s checksum does not match"));
    }
    Ok((&bytes[24..end], &bytes[end + 32..]))
}
