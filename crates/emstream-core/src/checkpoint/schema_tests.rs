//! Formats 2, 3 and 4 as a schema: golden files of every format load and resume
//! forever, the encoding of a fixed model is pinned, and every kind of
//! inconsistent file is refused by name.

use std::path::{Path, PathBuf};

use rand::SeedableRng;

use super::super::tests::frame_version as frame;
use super::super::v1::CheckpointV1;
use super::super::{decode, from_bytes, to_bytes, HEADER_LEN};
use super::*;
use crate::checkpoint::{CheckpointError, FORMAT_VERSION};
use crate::model::testdata;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// The payload of a golden file (its frame already checked by loading).
fn payload(bytes: &[u8]) -> &[u8] {
    &bytes[HEADER_LEN..bytes.len() - 4]
}

const V1_FILES: [&str; 4] = [
    "v1-warmup.ckpt",
    "v1-full-pending.ckpt",
    "v1-diag.ckpt",
    "v1-spherical.ckpt",
];

#[test]
fn golden_format_1_files_load_and_resume_to_the_recorded_models() {
    for name in V1_FILES {
        let path = golden(name);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
        let ck = from_bytes(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ck.anomalies, 1, "{name}");
        assert_eq!(ck.created_unix_ms, 1_700_000_000_000);
        assert!(ck.sources.is_empty() && ck.columns.is_none() && ck.selection.is_none());
        // The same 60 points the format-1 code learned from after loading.
        let mut l = ck.learner;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(99);
        let more = testdata::random_mixture(l.dim(), 2, 4.0, 8).sample(&mut rng, 60);
        l.observe(&more, None).unwrap();
        // Compared as text: printing an f64 is exact, parsing one with
        // serde_json's default parser may be off by an ulp.
        let want = std::fs::read_to_string(path.with_extension("resumed.json")).unwrap();
        let got = serde_json::json!({
            "mixture": l.mixture().unwrap().params(),
            "points_seen": l.counters().points_seen,
            "updates": l.counters().updates,
            "log_lik_sum": l.counters().log_lik_sum,
            "pending_points": l.pending_points(),
            "step": l.step(),
        });
        let got = serde_json::to_string_pretty(&got).unwrap() + "\n";
        assert_eq!(got, want, "{name}: resumed differently from format-1 code");
    }
}

#[test]
fn a_format_1_file_migrates_to_the_same_format_2_learner() {
    // Saving a migrated file and loading it again changes nothing.
    for name in V1_FILES {
        let ck = crate::checkpoint::load(&golden(name)).unwrap();
        let again = from_bytes(Path::new("x"), &to_bytes(&ck).unwrap()).unwrap();
        assert_eq!(ck.learner.state(), again.learner.state(), "{name}");
        assert_eq!(ck.rejected, again.rejected);
    }
}

/// The fixed model of the format-2 golden file: the format-1 fitted
/// learner with a pending batch, plus every field format 2 added.
fn fixed_v2() -> Checkpoint {
    let mut ck = crate::checkpoint::load(&golden("v1-full-pending.ckpt")).unwrap();
    ck.sources = vec![
        SourcePosition {
            source: "nats:points".into(),
            position: 4_242,
        },
        SourcePosition {
            source: "stdin".into(),
            position: 97,
        },
    ];
    ck.columns = Some(vec!["x".into(), "y".into()]);
    ck.selection = Some(ModelSelection {
        bic_by_k: vec![(1, 812.5), (2, 640.25), (3, 655.0)],
        chosen_by: "bic".into(),
    });
    ck.learner.set_selection(ck.selection.clone());
    ck
}

/// The fixed model of the format-3 golden file: the format-2 one with K
/// chosen by `auto`, `adapt_components` on, a K change counted, a
/// partly filled reservoir and the adapter's hysteresis state.
fn fixed_v3() -> Checkpoint {
    let ck = fixed_v2();
    let mut state = ck.learner.state();
    let mut p = state.params.clone().into_inner();
    p.components = ComponentCount::Auto;
    p.max_components = 6;
    p.adapt_components = true;
    state.params = p.check().unwrap();
    state.counters.component_changes = 1;
    // The golden file's reservoir is of the former capacity, which loads
    // as it is.
    let mut recent = RecentPoints::new(2, crate::model::online::FORMER_ADAPT_RECENT_POINTS);
    recent.push(&[0.5, -1.0, 3.25, 2.0, -0.125, 7.0]);
    state.recent = recent;
    state.adapter = Some(AdapterState {
        last_check: 5_000,
        last_full_check: 0,
        last_change: Some((5_000, -1)),
        changes: 1,
        baseline: Some(-3.75),
    });
    Checkpoint {
        learner: StepwiseEm::from_state(state).unwrap(),
        ..ck
    }
}

#[test]
fn the_encoding_of_a_fixed_model_is_pinned_to_its_format_version() {
    // Format 2 files load forever, and format 2's part of the schema
    // still encodes them to exactly their bytes.
    let path = golden("v2-full-pending.ckpt");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
    let ck = from_bytes(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ck.learner.state(), fixed_v2().learner.state());
    assert_eq!(ck.sources, fixed_v2().sources);
    assert_eq!(ck.columns, fixed_v2().columns);
    assert_eq!(ck.selection, fixed_v2().selection);
    assert!(postcard::to_stdvec(&CheckpointV2::of(&fixed_v2())).unwrap() == payload(&bytes));
    // Format 3 likewise; while this build writes format 3 it writes
    // exactly these bytes: a change of encoding needs a new version (and
    // this file stays as a test of loading format 3).
    let path = golden("v3-adapt.ckpt");
    if std::env::var_os("EMSTREAM_BLESS_GOLDEN").is_some() && !path.exists() {
        std::fs::write(&path, to_bytes(&fixed_v3()).unwrap()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let ck = from_bytes(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ck.learner.state(), fixed_v3().learner.state());
    assert_eq!(ck.selection, fixed_v3().selection);
    assert!(postcard::to_stdvec(&CheckpointV3::of(&fixed_v3())).unwrap() == payload(&bytes));
    // Format 4 likewise.
    let path = golden("v4-resolution.ckpt");
    if std::env::var_os("EMSTREAM_BLESS_GOLDEN").is_some() && !path.exists() {
        std::fs::write(&path, to_bytes(&fixed_v4()).unwrap()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 4);
    let ck = from_bytes(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ck.learner.state(), fixed_v4().learner.state());
    assert!(postcard::to_stdvec(&CheckpointV4::of(&fixed_v4())).unwrap() == payload(&bytes));
    // Format 5 likewise.
    let path = golden("v5-tol.ckpt");
    if std::env::var_os("EMSTREAM_BLESS_GOLDEN").is_some() && !path.exists() {
        std::fs::write(&path, to_bytes(&fixed_v5()).unwrap()).unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 5);
    let ck = from_bytes(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ck.learner.state(), fixed_v5().learner.state());
    assert_eq!(ck.learner.params().init_tol, 1e-6);
    if FORMAT_VERSION == 5 {
        assert!(
            to_bytes(&fixed_v5()).unwrap() == bytes,
            "the encoding of format 5 changed: bump FORMAT_VERSION, keep reading 5, add a golden file of the new format"
        );
    }
}

/// The fixed model of the format-5 golden file: the format-4 one with a
/// warm-up tolerance other than the default.
fn fixed_v5() -> Checkpoint {
    let ck = fixed_v4();
    let mut state = ck.learner.state();
    let mut p = state.params.clone().into_inner();
    p.init_tol = 1e-6;
    state.params = p.check().unwrap();
    Checkpoint {
        learner: StepwiseEm::from_state(state).unwrap(),
        ..ck
    }
}

#[test]
fn a_format_4_file_takes_the_default_tolerance_and_format_5_keeps_its_own() {
    let v4 = from_bytes(
        &golden("v4-resolution.ckpt"),
        &std::fs::read(golden("v4-resolution.ckpt")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        v4.learner.params().init_tol,
        crate::model::Params::default().init_tol
    );
    // A format-4 payload is the start of its format-5 payload.
    let v5 = postcard::to_stdvec(&CheckpointV5::of(&fixed_v5())).unwrap();
    let v4 = postcard::to_stdvec(&CheckpointV4::of(&fixed_v5())).unwrap();
    assert!(v5.starts_with(&v4) && v5.len() == v4.len() + 8);
}

/// The fixed model of the format-4 golden file: the format-3 one whose
/// first dimension has the given step 0.5 and whose second is continuous.
fn fixed_v4() -> Checkpoint {
    let ck = fixed_v3();
    let mut state = ck.learner.state();
    let mut p = state.params.clone().into_inner();
    p.resolution = crate::model::resolution::ResolutionSpec(vec![Some(0.5), None]);
    state.params = p.check().unwrap();
    state.resolution = Resolution::from_parts(
        vec![Some(0.5), None],
        vec![Some(1.0), Some(-2.25)],
        vec![DimResolution::Step(0.25), DimResolution::Continuous],
    )
    .unwrap();
    Checkpoint {
        learner: StepwiseEm::from_state(state).unwrap(),
        ..ck
    }
}

#[test]
fn a_format_3_file_migrates_to_continuous_dimensions_and_format_4_round_trips() {
    // A fitted format-3 model goes on with no floor: exactly as learned.
    let ck = fixed_v3();
    let r = ck.learner.resolution();
    assert!(r.seen().iter().all(|s| *s == DimResolution::Continuous));
    assert!(r.floor().iter().all(|f| *f == 0.0));
    // A format-3 payload is the start of its format-4 payload.
    let v4 = postcard::to_stdvec(&CheckpointV4::of(&fixed_v4())).unwrap();
    let v3 = postcard::to_stdvec(&CheckpointV3::of(&fixed_v4())).unwrap();
    assert!(v4.len() > v3.len() && v4[..v3.len()] == v3[..]);
    // Format 4 keeps the resolution, given and detected.
    let back = from_bytes(Path::new("x"), &to_bytes(&fixed_v4()).unwrap()).unwrap();
    assert_eq!(back.learner.resolution(), fixed_v4().learner.resolution());
    assert_eq!(back.learner.resolution().steps(), vec![Some(0.5), None]);
    assert_eq!(back.learner.params().resolution.to_string(), "0.5,auto");
    // A warm-up buffer of a format-3 file is detected afresh.
    let mut state = fixed_v3().learner.state();
    state.phase = Phase::WarmUp {
        buffer: vec![1.0, 0.5, 2.0, 0.75, 4.0, 0.25],
    };
    let warm = Checkpoint {
        learner: StepwiseEm::from_state(state).unwrap(),
        ..fixed_v3()
    };
    let v3 = postcard::to_stdvec(&CheckpointV3::of(&warm)).unwrap();
    let back = from_bytes(Path::new("x"), &frame(3, &v3)).unwrap();
    assert_eq!(
        back.learner.resolution().steps(),
        vec![Some(1.0), Some(0.25)]
    );
}

#[test]
fn a_provisional_model_is_kept_beside_its_warm_up_buffer() {
    let truth = testdata::random_mixture(2, 2, 6.0, 5);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let points = truth.sample(&mut rng, 300);
    let p = crate::model::Params {
        warmup: 1000,
        ..Default::default()
    };
    let mut l = StepwiseEm::new(p.check().unwrap(), 2);
    l.observe(&points, None).unwrap();
    assert!(l.mixture().is_none() && l.provisional().is_none());
    l.fit_provisional().unwrap();
    let m = l.provisional().cloned().expect("a provisional model");
    assert_eq!(m.n_components(), 2);
    let ck = Checkpoint {
        learner: l,
        ..fixed_v3()
    };
    let back = from_bytes(Path::new("x"), &to_bytes(&ck).unwrap()).unwrap();
    assert_eq!(back.learner.provisional(), Some(&m));
    assert_eq!(back.learner.pending_points(), 300);
    // More points go on filling the warm-up; the provisional model goes.
    let mut l = back.learner;
    l.observe(&points[..20], None).unwrap();
    assert!(l.provisional().is_none() && l.mixture().is_none());
}

#[test]
fn a_format_2_payload_is_the_start_of_its_format_3_payload() {
    let v3 = postcard::to_stdvec(&CheckpointV3::of(&fixed_v3())).unwrap();
    let v2 = postcard::to_stdvec(&CheckpointV2::of(&fixed_v3())).unwrap();
    assert!(v3.len() > v2.len() && v3[..v2.len()] == v2[..]);
    // A format-2 file migrates to a fixed K without adaptation, no K
    // change and an empty reservoir.
    let v2 = postcard::to_stdvec(&CheckpointV2::of(&fixed_v2())).unwrap();
    let ck = from_bytes(Path::new("x"), &frame(2, &v2)).unwrap();
    let p = ck.learner.params();
    assert_eq!(p.components, ComponentCount::Fixed(2));
    assert_eq!(
        p.max_components,
        crate::model::params::DEFAULT_MAX_COMPONENTS
    );
    assert!(!p.adapt_components);
    let state = ck.learner.state();
    assert!(state.recent.is_empty() && state.adapter.is_none());
    assert_eq!(state.counters.component_changes, 0);
    // A format-3 payload read as format 2 has bytes left over.
    let err = from_bytes(Path::new("x"), &frame(2, &v3)).unwrap_err();
    assert!(
        matches!(err, CheckpointError::TrailingPayload { .. }),
        "{err}"
    );
}

/// The on-disk form of a fitted learner with a pending batch, to spoil.
fn valid() -> CheckpointV2 {
    CheckpointV2::of(&fixed_v2())
}

fn fitted(v: &mut CheckpointV2) -> &mut FittedV2 {
    match &mut v.phase {
        PhaseV2::Fitted(f) => f,
        PhaseV2::WarmUp { .. } => panic!("fitted expected"),
    }
}

/// Loads `v` framed as a valid format-2 file and returns the refusal.
fn refusal(v: &CheckpointV2) -> String {
    let bytes = frame(2, &postcard::to_stdvec(v).unwrap());
    match decode::<Checkpoint>(Path::new("x"), &bytes) {
        Err(e @ CheckpointError::Invalid { .. }) => e.to_string(),
        Err(e) => panic!("refused, but not as invalid contents: {e}"),
        Ok(_) => panic!("an inconsistent checkpoint was accepted"),
    }
}

#[test]
fn every_inconsistent_format_2_file_is_refused_by_name() {
    assert!(decode::<Checkpoint>(
        Path::new("x"),
        &frame(2, &postcard::to_stdvec(&valid()).unwrap())
    )
    .is_ok());
    type Spoil = fn(&mut CheckpointV2);
    let cases: Vec<(&str, Spoil)> = vec![
        ("options are out of range", |v| v.params.batch_size = 0),
        ("the dimension is 0", |v| v.dim = 0),
        // Found by the fuzz harness: a huge dimension made the loader
        // allocate petabytes and abort before any shape was compared.
        ("larger than the", |v| v.dim = 1 << 50),
        ("larger than the 65536 numbers", |v| {
            v.dim = 1 << 40;
            v.phase = PhaseV2::WarmUp { buffer: Vec::new() };
        }),
        ("not one per dimension (3)", |v| {
            v.dim = 3;
            v.columns = None;
        }),
        ("the mixture is of dimension 2", |v| {
            v.dim = 3;
            v.columns = None;
            let e = &mut fitted(v).engine;
            e.scale.push(1.0);
            e.reg.push(0.0);
        }),
        ("the mixture is invalid", |v| {
            fitted(v).mixture.weights[0] = f64::NAN
        }),
        ("not symmetric positive definite", |v| {
            fitted(v).mixture.covariances[0] = -1.0;
        }),
        ("the mixture is invalid", |v| {
            fitted(v).mixture.means.pop();
        }),
        ("do not fit the mixture", |v| fitted(v).stats.s0.push(0.1)),
        ("do not fit the mixture", |v| fitted(v).stats.dim = 3),
        ("do not fit the mixture", |v| {
            fitted(v).stats.covariance = crate::model::CovarianceType::Diagonal;
        }),
        ("statistics are not finite", |v| {
            fitted(v).stats.cov[1] = f64::INFINITY
        }),
        ("the engine's scale", |v| {
            fitted(v).engine.reg.pop();
        }),
        ("data scale is not finite and positive", |v| {
            fitted(v).engine.scale[0] = 0.0
        }),
        ("the pending batch", |v| fitted(v).pending.push(1.0)),
        ("the pending batch", |v| {
            fitted(v).pending = vec![0.5; 2 * 25]
        }),
        ("re-seeding point", |v| {
            fitted(v).worst.pop();
        }),
        ("step counter", |v| v.step = f64::NAN),
        ("log-likelihood sum is NaN", |v| {
            v.counters.log_lik_sum = f64::NAN
        }),
        ("before the run was created", |v| v.updated_unix_ms = 0),
        ("column names", |v| v.columns = Some(vec!["x".into()])),
        ("whole points", |v| {
            v.phase = PhaseV2::WarmUp {
                buffer: vec![1.0; 3],
            }
        }),
    ];
    for (check, spoil) in cases {
        let mut v = valid();
        spoil(&mut v);
        let msg = refusal(&v);
        assert!(msg.contains(check), "expected {check:?}, got: {msg}");
    }
}

#[test]
fn a_format_1_file_with_a_fitted_phase_missing_parts_is_refused() {
    let bytes = std::fs::read(golden("v1-full-pending.ckpt")).unwrap();
    let v1: CheckpointV1 = postcard::from_bytes(payload(&bytes)).unwrap();
    let mut no_engine = v1.clone();
    no_engine.learner.engine = None;
    let mut no_mixture = v1.clone();
    no_mixture.learner.mixture = None;
    let mut wrong_engine = v1.clone();
    if let Some(e) = wrong_engine.learner.engine.as_mut() {
        e.dim = 5;
    }
    for (bad, check) in [
        (no_engine, "fitted phase with parts missing: engine missing"),
        (
            no_mixture,
            "fitted phase with parts missing: engine present, statistics present, mixture missing",
        ),
        (wrong_engine, "the engine is for dimension 5"),
    ] {
        let framed = frame(1, &postcard::to_stdvec(&bad).unwrap());
        let msg = match decode::<Checkpoint>(Path::new("x"), &framed) {
            Err(e @ CheckpointError::Invalid { .. }) => e.to_string(),
            other => panic!("{check}: {other:?}"),
        };
        assert!(msg.contains(check), "expected {check:?}, got: {msg}");
    }
    // The unspoilt payload, re-framed, still loads.
    assert!(decode::<Checkpoint>(
        Path::new("x"),
        &frame(1, &postcard::to_stdvec(&v1).unwrap())
    )
    .is_ok());
}
