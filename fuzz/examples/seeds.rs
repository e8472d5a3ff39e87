//! Writes the seed inputs of every target to `corpus/<target>/` (run from `fuzz/`:
//! `cargo run --example seeds`). Existing files are left alone.

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (target, name, data) in gw_fuzz::proto_targets::seeds().into_iter().chain(gw_fuzz::gateway_targets::seeds())
        .chain(gw_fuzz::gatewayworker_targets::seeds())
        .chain(gw_fuzz::delivery_targets::seeds())
        .chain(gw_fuzz::pusher_targets::seeds())
    {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, data)?;
        }
    }
    Ok(())
}
