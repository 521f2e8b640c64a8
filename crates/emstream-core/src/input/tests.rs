//! Framer and parser together: any way of splitting the byte stream gives
//! the same points and the same rejects.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// Frames `pieces` (one source) and parses every chunk into one batch.
fn run(pieces: &[&[u8]], max_line: usize, chunk_size: usize, config: &ParserConfig) -> Batch {
    let mut framer = Framer::new(5, max_line, chunk_size);
    let mut parser = Parser::new(config.clone());
    let mut chunks = Vec::new();
    let mut batch = Batch::default();
    for piece in pieces {
        framer.push(piece, &mut chunks);
        for chunk in chunks.drain(..) {
            parser.parse(&chunk, &mut batch);
        }
    }
    framer.finish(&mut chunks);
    assert_eq!(chunks.last().map(|c| c.last), Some(true));
    for chunk in chunks.drain(..) {
        parser.parse(&chunk, &mut batch);
    }
    batch
}

/// A messy stream: every kind of good and bad line, long lines, comments,
/// CRLF, a header and no final line end.
fn messy_input(rng: &mut ChaCha8Rng, lines: usize) -> Vec<u8> {
    let mut s = b"x,y\n".to_vec();
    for i in 0..lines {
        let a: f64 = rng.random_range(-100.0..100.0);
        let b: f64 = rng.random_range(-1e-3..1e-3);
        let line = match rng.random_range(0..20) {
            0 => "# a comment".to_owned(),
            1 => String::new(),
            2 => format!("{a},abc"),
            3 => format!("{a},{b},{a}"),
            4 => format!("{a},nan"),
            5 => "9".repeat(rng.random_range(30..90)),
            6 => format!("# {}", "c".repeat(rng.random_range(30..90))),
            7 => format!("{a}\t {b}\r"),
            8 => format!("{a};,{b}"),
            _ => format!("{a},{b}"),
        };
        s.extend_from_slice(line.as_bytes());
        if i + 1 < lines {
            s.push(b'\n');
        }
    }
    s.extend_from_slice(b"\xff,1");
    s
}

fn same(a: &Batch, b: &Batch, what: &str) {
    assert_eq!(a.values, b.values, "{what}");
    assert_eq!(a.errors, b.errors, "{what}");
    assert_eq!(a.rejected, b.rejected, "{what}");
    assert_eq!(a.headers, b.headers, "{what}");
    assert_eq!(a.dim, b.dim, "{what}");
}

#[test]
fn any_split_gives_the_same_batches() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let config = ParserConfig::default();
    for round in 0..20 {
        let input = messy_input(&mut rng, 300);
        let max_line = 64;
        let chunk_size = rng.random_range(1..400);
        let whole = run(&[&input], max_line, chunk_size, &config);
        assert!(!whole.values.is_empty());
        assert!(whole.rejected.get(RejectReason::TooLong) > 0);
        assert_eq!(whole.headers.len(), 1);
        // Random cuts.
        for _ in 0..10 {
            let mut cuts: Vec<usize> = (0..rng.random_range(1..50))
                .map(|_| rng.random_range(0..=input.len()))
                .collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in cuts {
                pieces.push(&input[from..cut]);
                from = cut;
            }
            pieces.push(&input[from..]);
            same(
                &run(&pieces, max_line, chunk_size, &config),
                &whole,
                &format!("round {round}"),
            );
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        same(
            &run(&bytes, max_line, chunk_size, &config),
            &whole,
            "bytewise",
        );
    }
}

#[test]
fn every_two_way_split_gives_the_same_batch() {
    let input = b"a,b\n1,2\n# c\n3,x\n\n4,5,6\n12345678901234567890123\n7,8\r\n9,1e999\n10,11";
    let config = ParserConfig::default();
    let whole = run(&[input], 16, 8, &config);
    assert_eq!(whole.values, vec![1., 2., 7., 8., 10., 11.]);
    let lines: Vec<(u64, RejectReason)> = whole.errors.iter().map(|e| (e.line, e.reason)).collect();
    assert_eq!(
        lines,
        vec![
            (4, RejectReason::NotNumeric),
            (6, RejectReason::FieldCount),
            (7, RejectReason::TooLong),
            (9, RejectReason::NonFinite),
        ]
    );
    for cut in 0..=input.len() {
        let split = run(&[&input[..cut], &input[cut..]], 16, 8, &config);
        same(&split, &whole, &format!("cut at {cut}"));
    }
}

#[test]
fn line_numbers_are_right_across_many_chunks() {
    let mut input = Vec::new();
    for i in 1..=5000u32 {
        if i % 1000 == 0 {
            input.extend_from_slice(b"bad,line\n");
        } else {
            input.extend_from_slice(format!("{i},{i}\n").as_bytes());
        }
    }
    let batch = run(&[&input], 1024, 256, &ParserConfig::default());
    let lines: Vec<u64> = batch.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![1000, 2000, 3000, 4000, 5000]);
    assert_eq!(batch.values.len(), 2 * 4995);
    assert_eq!(batch.values[2 * 999], 1001.0);
}

#[test]
fn unterminated_last_line_is_parsed() {
    let batch = run(&[b"1,2\n3,", b"4"], 100, 4, &ParserConfig::default());
    assert_eq!(batch.values, vec![1., 2., 3., 4.]);
}

#[test]
fn parse_errors_say_the_reason_in_words() {
    let e = ParseError {
        source_id: 0,
        line: 3,
        reason: RejectReason::NotNumeric,
        detail: "field 1 \"x\" is not a number".into(),
        message: None,
    };
    assert_eq!(
        e.to_string(),
        "line 3: not a number: field 1 \"x\" is not a number"
    );
    assert_eq!(RejectReason::TooLong.to_string(), "line too long");
}

/// Random bytes, biased towards what numbers and separators are made of,
/// never make the framer or parser panic, and whatever they accept is a
/// whole number of finite rows; every line is either a row, a reject, a
/// header, or ignored (empty or comment).
#[test]
fn random_bytes_never_panic_and_only_finite_rows_pass() {
    const ALPHABET: &[u8] = b"0123456789.-+eE,; \t\n\r#[]{}:nafi\"\xff\xc3\xef\xbb\xbf";
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    for case in 0..400 {
        let len = rng.random_range(0..4000);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.random_range(0..10) == 0 {
                    rng.random()
                } else {
                    ALPHABET[rng.random_range(0..ALPHABET.len())]
                }
            })
            .collect();
        for format in [Format::Csv, Format::Json] {
            let config = ParserConfig {
                format,
                columns: if case % 3 == 0 {
                    Some(Columns::new(vec![1, 0]).unwrap())
                } else {
                    None
                },
                dim: if case % 5 == 0 { Some(2) } else { None },
                delimiter: [Delimiter::Auto, Delimiter::Semicolon, Delimiter::Tab][case % 3],
                fields: (case % 4 == 1).then(|| vec!["a".into(), "b.c".into()]),
                string_numbers: case % 2 == 0,
                ..ParserConfig::default()
            };
            let cut = if bytes.is_empty() {
                0
            } else {
                rng.random_range(0..bytes.len())
            };
            let batch = run(&[&bytes[..cut], &bytes[cut..]], 64, 128, &config);
            assert!(batch.values.iter().all(|v| v.is_finite()), "case {case}");
            if batch.dim > 0 {
                assert_eq!(batch.values.len() % batch.dim, 0, "case {case}");
            } else {
                assert!(batch.values.is_empty(), "case {case}");
            }
            let rows = batch.values.len().checked_div(batch.dim).unwrap_or(0);
            let lines = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
            assert!(
                rows as u64 + batch.rejected.total() + batch.headers.len() as u64 <= lines as u64,
                "case {case}: more records than lines"
            );
            assert_eq!(
                batch.errors.len() as u64,
                batch.rejected.total(),
                "case {case}"
            );
        }
    }
}
