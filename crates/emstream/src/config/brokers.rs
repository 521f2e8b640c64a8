//! The broker sources' options (MQTT and NATS JetStream) and
//! `--stop-when-idle`, checked once into [`MqttOptions`] and
//! [`NatsOptions`].

use std::path::PathBuf;
use std::time::Duration;

use super::Config;

/// A broker option that cannot be used; the message says what to change.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BrokerError {
    /// More than one of input, listen, mqtt and nats is set.
    #[error("{0} and {1} are both set: read points from one source (--input, --listen, --mqtt or --nats)")]
    TwoSources(&'static str, &'static str),
    /// The MQTT address is not `mqtt://HOST:PORT` or `mqtts://HOST:PORT`.
    #[error("mqtt = {0:?} is not an MQTT address: write mqtt://HOST:PORT (or mqtts://HOST:PORT with mqtt_ca_file)")]
    MqttUrl(String),
    /// `mqtts://` without a CA file, or a CA file with `mqtt://`.
    #[error("{0}")]
    MqttTls(&'static str),
    /// No topic filter.
    #[error("mqtt needs at least one --topic FILTER (wildcards + and # allowed)")]
    NoTopic,
    /// A topic filter MQTT would refuse.
    #[error("topic {0:?} is not a valid MQTT topic filter: '#' only as the last level, '+' only as a whole level, no empty filter")]
    Topic(String),
    /// QoS other than 0 or 1.
    #[error("qos = {0} is not supported: use 0 (at most once) or 1 (at least once)")]
    Qos(u8),
    /// A persistent session without a fixed client id.
    #[error(
        "persistent_session needs a fixed --client-id: the broker keeps the session under that id"
    )]
    PersistentNeedsId,
    /// The NATS address is not `nats://HOST:PORT` or `tls://HOST:PORT`.
    #[error("nats = {0:?} is not a NATS address: write nats://HOST:PORT (or tls://HOST:PORT)")]
    NatsUrl(String),
    /// Only one of `nats_cert` and `nats_key`.
    #[error(
        "nats_cert and nats_key go together: give both --nats-cert and --nats-key, or neither"
    )]
    NatsClientCert,
    /// `--nats` without `--stream` or `--consumer`.
    #[error("nats needs --{0} NAME")]
    NatsNeeds(&'static str),
    /// A stream, consumer or subject name NATS would refuse.
    #[error(
        "{key} = {value:?} is not a valid NATS name: no spaces, dots, '*', '>' or empty names"
    )]
    NatsName {
        /// The option.
        key: &'static str,
        /// Its value.
        value: String,
    },
    /// An option that belongs to a source that is not used.
    #[error("{0} is an option of --{1}, which is not given")]
    Stray(&'static str, &'static str),
    /// A duration that is not a positive number of seconds.
    #[error("{key} = {value} must be a positive number of seconds")]
    Seconds {
        /// The option.
        key: &'static str,
        /// Its value.
        value: f64,
    },
}

/// Where an MQTT subscription connects and what it asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct MqttOptions {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// CA file for `mqtts://` (TLS), none for plain `mqtt://`.
    pub ca_file: Option<PathBuf>,
    /// Topic filters subscribed to.
    pub topics: Vec<String>,
    /// QoS asked for (0 or 1).
    pub qos: u8,
    /// Client id (a generated one when absent).
    pub client_id: Option<String>,
    /// File holding the user name on its first line and the password on
    /// its second.
    pub credentials: Option<PathBuf>,
    /// Keep the session (subscriptions and queued QoS 1 messages) on the
    /// broker across disconnects.
    pub persistent: bool,
    /// Learn retained messages (skipped by default).
    pub retained: bool,
    /// User name and password given in the address (`mqtt://USER:PASS@HOST:PORT`).
    pub login: Option<Login>,
    /// The run's memory budget (bounds the largest packet accepted).
    pub max_memory: u64,
    /// The first connection must succeed within this time, else the run
    /// fails; retried for ever when absent.
    pub connect_timeout: Option<Duration>,
}

/// Where a JetStream source reads and how it resumes.
#[derive(Clone, Debug, PartialEq)]
pub struct NatsOptions {
    /// Server URL (`nats://HOST:PORT` or `tls://HOST:PORT`).
    pub url: String,
    /// The stream read.
    pub stream: String,
    /// One subject filter inside the stream (all subjects when absent).
    pub subject: Option<String>,
    /// The durable consumer's name.
    pub consumer: String,
    /// NATS credentials file (JWT and NKey seed).
    pub credentials: Option<PathBuf>,
    /// CA file; makes TLS required.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a server that verifies clients; makes
    /// TLS required. Always given with `key`.
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of `cert`.
    pub key: Option<PathBuf>,
    /// Continue past a retention gap (counted) instead of refusing.
    pub allow_gap: bool,
    /// The first connection must succeed within this time, else the run
    /// fails; retried for ever when absent.
    pub connect_timeout: Option<Duration>,
}

/// A positive number of seconds as a duration.
pub(super) fn seconds(key: &'static str, v: Option<f64>) -> Result<Option<Duration>, BrokerError> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        Some(value) => Err(BrokerError::Seconds { key, value }),
    }
}

/// Whether `f` is a topic filter a broker accepts.
pub(crate) fn valid_topic_filter(f: &str) -> bool {
    if f.is_empty() || f.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = f.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| {
        (!l.contains('#') || (*l == "#" && i == levels.len() - 1))
            && (!l.contains('+') || *l == "+")
    })
}

fn valid_nats_name(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
}

/// A user name and password.
type Login = (String, String);

/// `mqtt://[USER:PASS@]HOST:PORT` or `mqtts://...` as (host, port, tls,
/// login).
fn mqtt_url(url: &str) -> Option<(String, u16, bool, Option<Login>)> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true)
    } else {
        (url.strip_prefix("mqtt://")?, false)
    };
    let rest = rest.trim_end_matches('/');
    // `user:password@` before the host, as in the NATS URLs.
    let (login, rest) = match rest.rsplit_once('@') {
        Some((info, rest)) => {
            let (user, pass) = info.split_once(':').unwrap_or((info, ""));
            (Some((user.to_string(), pass.to_string())), rest)
        }
        None => (None, rest),
    };
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return None;
    }
    Some((host.to_string(), port.parse().ok()?, tls, login))
}

/// `url` with any `user:password@` or `token@` before the host replaced
/// by `***@`, for messages and logs: a broker URL may carry credentials.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

/// The broker part of [`Config::check`]: which broker source, if any, and
/// its checked options. `others` names the other sources set (input,
/// listen) to refuse two at once.
pub(super) fn check(
    c: &Config,
    others: &[&'static str],
) -> Result<(Option<MqttOptions>, Option<NatsOptions>), BrokerError> {
    let mut set: Vec<&'static str> = others.to_vec();
    if c.mqtt.is_some() {
        set.push("mqtt");
    }
    if c.nats.is_some() {
        set.push("nats");
    }
    if set.len() > 1 {
        return Err(BrokerError::TwoSources(set[0], set[1]));
    }
    let connect_timeout = seconds("connect_timeout", c.connect_timeout)?;
    let mqtt = match &c.mqtt {
        None => {
            for (key, stray) in [
                ("topic", !c.topic.is_empty()),
                ("client_id", c.client_id.is_some()),
                ("mqtt_credentials", c.mqtt_credentials.is_some()),
                ("mqtt_ca_file", c.mqtt_ca_file.is_some()),
                ("persistent_session", c.persistent_session),
                ("mqtt_retained", c.mqtt_retained),
            ] {
                if stray {
                    return Err(BrokerError::Stray(key, "mqtt"));
                }
            }
            None
        }
        Some(url) => {
            let (host, port, tls, login) =
                mqtt_url(url).ok_or_else(|| BrokerError::MqttUrl(redact_url(url)))?;
            if login.is_some() && c.mqtt_credentials.is_some() {
                return Err(BrokerError::MqttTls(
                    "the MQTT address carries a user and password and --mqtt-credentials is given too: give one",
                ));
            }
            match (tls, &c.mqtt_ca_file) {
                (true, None) => {
                    return Err(BrokerError::MqttTls(
                        "mqtts:// needs --mqtt-ca-file FILE (the CA that signed the broker's certificate)",
                    ))
                }
                (false, Some(_)) => {
                    return Err(BrokerError::MqttTls(
                        "--mqtt-ca-file is for TLS: write the address as mqtts://HOST:PORT",
                    ))
                }
                _ => {}
            }
            if c.topic.is_empty() {
                return Err(BrokerError::NoTopic);
            }
            if let Some(t) = c.topic.iter().find(|t| !valid_topic_filter(t)) {
                return Err(BrokerError::Topic(t.clone()));
            }
            if c.qos > 1 {
                return Err(BrokerError::Qos(c.qos));
            }
            if c.persistent_session && c.client_id.is_none() {
                return Err(BrokerError::PersistentNeedsId);
            }
            Some(MqttOptions {
                host,
                port,
                ca_file: c.mqtt_ca_file.clone(),
                topics: c.topic.clone(),
                qos: c.qos,
                client_id: c.client_id.clone(),
                credentials: c.mqtt_credentials.clone(),
                persistent: c.persistent_session,
                retained: c.mqtt_retained,
                login,
                max_memory: c.max_memory,
                connect_timeout,
            })
        }
    };
    let nats = match &c.nats {
        None => {
            for (key, stray) in [
                ("stream", c.stream.is_some()),
                ("subject", c.subject.is_some()),
                ("consumer", c.consumer.is_some()),
                ("nats_credentials", c.nats_credentials.is_some()),
                ("nats_ca_file", c.nats_ca_file.is_some()),
                ("nats_cert", c.nats_cert.is_some()),
                ("nats_key", c.nats_key.is_some()),
                ("allow_gap", c.allow_gap),
            ] {
                if stray {
                    return Err(BrokerError::Stray(key, "nats"));
                }
            }
            None
        }
        Some(url) => {
            let ok = ["nats://", "tls://"]
                .iter()
                .any(|p| url.strip_prefix(p).is_some_and(|r| r.contains(':')));
            if !ok {
                return Err(BrokerError::NatsUrl(url.clone()));
            }
            let stream = c.stream.clone().ok_or(BrokerError::NatsNeeds("stream"))?;
            let consumer = c
                .consumer
                .clone()
                .ok_or(BrokerError::NatsNeeds("consumer"))?;
            for (key, value) in [("stream", &stream), ("consumer", &consumer)] {
                if !valid_nats_name(value) {
                    return Err(BrokerError::NatsName {
                        key,
                        value: value.clone(),
                    });
                }
            }
            if c.nats_cert.is_some() != c.nats_key.is_some() {
                return Err(BrokerError::NatsClientCert);
            }
            if let Some(s) = &c.subject {
                if s.is_empty() || s.contains(char::is_whitespace) {
                    return Err(BrokerError::NatsName {
                        key: "subject",
                        value: s.clone(),
                    });
                }
            }
            Some(NatsOptions {
                url: url.clone(),
                stream,
                subject: c.subject.clone(),
                consumer,
                credentials: c.nats_credentials.clone(),
                ca_file: c.nats_ca_file.clone(),
                cert: c.nats_cert.clone(),
                key: c.nats_key.clone(),
                allow_gap: c.allow_gap,
                connect_timeout,
            })
        }
    };
    if mqtt.is_none() && nats.is_none() && connect_timeout.is_some() {
        return Err(BrokerError::Stray("connect_timeout", "mqtt or --nats"));
    }
    Ok((mqtt, nats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(
        f: impl FnOnce(&mut Config),
    ) -> Result<(Option<MqttOptions>, Option<NatsOptions>), BrokerError> {
        let mut c = Config::default();
        f(&mut c);
        check(&c, &[])
    }

    #[test]
    fn mqtt_addresses_and_topics_are_checked() {
        let (m, _) = with(|c| {
            c.mqtt = Some("mqtt://127.0.0.1:1883".into());
            c.topic = vec!["sensors/+/temp".into(), "plant/#".into()];
        })
        .unwrap();
        let m = m.unwrap();
        assert_eq!((m.host.as_str(), m.port, m.qos), ("127.0.0.1", 1883, 1));
        for bad in ["a/#/b", "a+/b", "", "a/b#"] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
        assert!(valid_topic_filter("#") && valid_topic_filter("+/x/+"));
        let e = with(|c| c.mqtt = Some("127.0.0.1:1883".into())).unwrap_err();
        assert!(e.to_string().contains("mqtt://HOST:PORT"), "{e}");
        let e = with(|c| c.mqtt = Some("mqtt://h:1".into())).unwrap_err();
        assert_eq!(e, BrokerError::NoTopic);
        let e = with(|c| {
            c.mqtt = Some("mqtts://h:8883".into());
            c.topic = vec!["t".into()];
        })
        .unwrap_err();
        assert!(e.to_string().contains("--mqtt-ca-file"), "{e}");
        let e = with(|c| {
            c.mqtt = Some("mqtt://h:1".into());
            c.topic = vec!["t".into()];
            c.persistent_session = true;
        })
        .unwrap_err();
        assert_eq!(e, BrokerError::PersistentNeedsId);
        let e = with(|c| {
            c.mqtt = Some("mqtt://h:1".into());
            c.topic = vec!["t".into()];
            c.qos = 2;
        })
        .unwrap_err();
        assert_eq!(e, BrokerError::Qos(2));
    }

    #[test]
    fn credentials_in_an_address_are_used_and_never_shown() {
        let (m, _) = with(|c| {
            c.mqtt = Some("mqtt://emu:s3cret@127.0.0.1:1883".into());
            c.topic = vec!["t".into()];
        })
        .unwrap();
        let m = m.unwrap();
        assert_eq!((m.host.as_str(), m.port), ("127.0.0.1", 1883));
        assert_eq!(m.login, Some(("emu".into(), "s3cret".into())));
        let e = with(|c| {
            c.mqtt = Some("mqtt://emu:s3cret@127.0.0.1:1883".into());
            c.topic = vec!["t".into()];
            c.mqtt_credentials = Some("creds".into());
        })
        .unwrap_err();
        assert!(e.to_string().contains("give one"), "{e}");
        let e = with(|c| c.mqtt = Some("mqtt://emu:s3cret@host".into())).unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
        for (url, shown) in [
            (
                "nats://emu:s3cret@127.0.0.1:4222",
                "nats://***@127.0.0.1:4222",
            ),
            ("nats://tok3n@h:4222/g", "nats://***@h:4222/g"),
            ("tls://h:4222", "tls://h:4222"),
            ("nats://h:4222/a@b", "nats://h:4222/a@b"),
            ("no scheme", "no scheme"),
        ] {
            assert_eq!(redact_url(url), shown);
        }
    }

    #[test]
    fn nats_needs_stream_and_consumer_and_one_source_only() {
        let e = with(|c| c.nats = Some("nats://127.0.0.1:4222".into())).unwrap_err();
        assert_eq!(e, BrokerError::NatsNeeds("stream"));
        let (_, n) = with(|c| {
            c.nats = Some("nats://127.0.0.1:4222".into());
            c.stream = Some("POINTS".into());
            c.consumer = Some("emstream".into());
            c.subject = Some("points.>".into());
        })
        .unwrap();
        assert_eq!(n.unwrap().subject.as_deref(), Some("points.>"));
        let e = with(|c| {
            c.nats = Some("nats://h:1".into());
            c.stream = Some("A.B".into());
            c.consumer = Some("c".into());
        })
        .unwrap_err();
        assert!(matches!(e, BrokerError::NatsName { key: "stream", .. }));
        let e = with(|c| {
            c.nats = Some("nats://h:1".into());
            c.mqtt = Some("mqtt://h:1".into());
        })
        .unwrap_err();
        assert_eq!(e, BrokerError::TwoSources("mqtt", "nats"));
        let e = with(|c| c.allow_gap = true).unwrap_err();
        assert_eq!(e, BrokerError::Stray("allow_gap", "nats"));
    }

    #[test]
    fn a_nats_client_certificate_needs_its_key_and_nats() {
        let nats = |c: &mut Config| {
            c.nats = Some("tls://127.0.0.1:4222".into());
            c.stream = Some("S".into());
            c.consumer = Some("c".into());
        };
        let e = with(|c| {
            nats(c);
            c.nats_cert = Some("client.pem".into());
        })
        .unwrap_err();
        assert_eq!(e, BrokerError::NatsClientCert);
        assert!(e.to_string().contains("--nats-key"), "{e}");
        let e = with(|c| {
            nats(c);
            c.nats_key = Some("key.pem".into());
        })
        .unwrap_err();
        assert_eq!(e, BrokerError::NatsClientCert);
        let (_, n) = with(|c| {
            nats(c);
            c.nats_cert = Some("client.pem".into());
            c.nats_key = Some("key.pem".into());
        })
        .unwrap();
        let n = n.unwrap();
        assert_eq!(
            (n.cert.unwrap(), n.key.unwrap()),
            ("client.pem".into(), "key.pem".into())
        );
        let e = with(|c| c.nats_cert = Some("client.pem".into())).unwrap_err();
        assert_eq!(e, BrokerError::Stray("nats_cert", "nats"));
    }
}
