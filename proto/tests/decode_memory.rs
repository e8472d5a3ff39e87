//! A length claimed inside a payload costs no memory (regression test for what `fuzz/` found:
//! bincode allocated an announced string or byte-buffer length before checking the input, so a
//! 10-byte frame could make a peer allocate up to 64 MiB, before authentication too).
//!
//! Measured with the process's peak virtual size (`VmPeak`), which any such allocation raises
//! even though its pages are never touched. This file holds a single test so no other test
//! thread moves the peak while it measures.

use gw_proto::handshake::{ClientHello, MAGIC};
use gw_proto::{FromGateway, PROTOCOL_VERSION, ToGateway, ToRegister, codec};

#[cfg(target_os = "linux")]
fn vm_peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmPeak:")).expect("VmPeak in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Varint (bincode) of a length of 60 MiB: above glibc's largest mmap threshold, so it is
/// always a fresh mapping.
fn claim_60_mib() -> Vec<u8> {
    let mut v = vec![0xfc];
    v.extend_from_slice(&(60u32 << 20).to_le_bytes());
    v
}

#[cfg(target_os = "linux")]
#[test]
fn claimed_lengths_inside_a_payload_allocate_nothing() {
    // The measurement runs in a child process (this test binary again) with one malloc arena:
    // a test thread's own arena reserves 128 MiB for a moment when it is created, which would
    // hide a 60 MiB peak.
    if std::env::var_os(CHILD).is_some() {
        return measure();
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "claimed_lengths_inside_a_payload_allocate_nothing", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("MALLOC_ARENA_MAX", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("measured:"), "child failed:\n{text}");
}

const CHILD: &str = "GW_DECODE_MEMORY_CHILD";

#[cfg(target_os = "linux")]
fn measure() {
    // ToGateway::Command(Command::SetSession { client: 1, session: <60 MiB> })
    let set_session = [&[0u8, 12, 1][..], &claim_60_mib()].concat();
    // ToRegister::Announce { gateway: GatewayInfo { address: <60 MiB string> } }
    let announce = [&[0u8][..], &claim_60_mib()].concat();
    // FromGateway::Welcome { instance: 1, address: <60 MiB string> }
    let welcome = [&[0u8, 1][..], &claim_60_mib()].concat();
    // A ClientHello whose node name claims 60 MiB: what an unauthenticated peer can send.
    let mut hello = Vec::new();
    codec::encode_frame(&(MAGIC, PROTOCOL_VERSION, 2u32), &mut hello, 1 << 20).unwrap();
    hello.drain(..4);
    hello.extend_from_slice(&claim_60_mib());
    // ToGateway::Request { id: 1, query: IsOnline { clients: <2^60 elements> } }
    let mut huge_vec = vec![1u8, 1, 0, 0xfd];
    huge_vec.extend_from_slice(&(1u64 << 60).to_le_bytes());

    // Warm up the error paths.
    for _ in 0..2 {
        assert!(codec::decode::<ToGateway>(&[0u8, 12, 1, 2, b'{', b'}']).is_ok());
        assert!(codec::decode::<ToGateway>(&set_session[..6]).is_err());
    }
    let before = vm_peak_kib();
    for _ in 0..10 {
        assert!(codec::decode::<ToGateway>(&set_session).is_err());
        assert!(codec::decode::<ToRegister>(&announce).is_err());
        assert!(codec::decode::<FromGateway>(&welcome).is_err());
        assert!(codec::decode::<ClientHello>(&hello).is_err());
        assert!(codec::decode::<ToGateway>(&huge_vec).is_err());
    }
    let grown = vm_peak_kib() - before;
    println!("measured: peak virtual size grew by {grown} KiB");
    assert!(grown < 16 * 1024, "decoding hostile payloads raised the peak virtual size by {grown} KiB");
}
