//! Config size: parsing and compiling a config of 10,000 and 100,000 routes (what
//! `meridian check` and a reload do), each route on its own host.
//!
//! `cargo bench --bench config_size` — about half a minute. For `meridian check` on the same
//! configs (time and memory; benches/load/results.md), write them out with
//! `MERIDIAN_CONFIG_DIR=/tmp/big cargo test --test config_size -- --ignored write_configs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common {
    pub mod big_config;
}

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use meridian::{config, table};

use common::big_config;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("config/compile");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500));
    for routes in [10_000, 100_000] {
        let text = big_config::config_yaml(routes, 1);
        // Ten runs of 100,000 routes take about 20 s.
        group.measurement_time(Duration::from_millis(routes as u64 / 5));
        group.bench_with_input(BenchmarkId::from_parameter(routes), &text, |b, text| {
            b.iter(|| {
                let loaded = config::load_str(black_box(text), Path::new("big.yaml")).unwrap();
                let table = table::compile(&loaded, table::CompileContext::default()).unwrap();
                black_box(table.routes.routes.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
