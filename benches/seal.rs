//! The AEAD of sealed packets on 1280-byte packets (the size a relayed full-MTU packet has):
//! ring's ChaCha20-Poly1305 (what `mesh::seal` uses) against RustCrypto's
//! `chacha20poly1305`, seal in place with 28 bytes of associated data. The figures are in
//! docs/SEALING.md. No assertions on time anywhere.

use std::hint::black_box;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

const LEN: usize = 1280 - 16;
const AAD: [u8; 28] = [7; 28];

fn nonce(n: u64) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_le_bytes());
    b
}

fn aead(c: &mut Criterion) {
    let mut g = c.benchmark_group("seal_1280");
    g.throughput(Throughput::Bytes(LEN as u64));
    let key = [0x42u8; 32];
    let mut buf = vec![0x5au8; LEN];
    let ring_key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).unwrap());
    let mut n = 0u64;
    g.bench_function("ring", |b| {
        b.iter(|| {
            n += 1;
            let tag = ring_key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce(n)),
                    Aad::from(AAD),
                    black_box(&mut buf[..]),
                )
                .unwrap();
            let _ = black_box(tag);
        })
    });
    let rc = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
    g.bench_function("chacha20poly1305", |b| {
        b.iter(|| {
            n += 1;
            let tag = rc
                .encrypt_in_place_detached(&nonce(n).into(), &AAD, black_box(&mut buf[..]))
                .unwrap();
            let _ = black_box(tag);
        })
    });
    g.finish();
}

criterion_group!(benches, aead);
criterion_main!(benches);
