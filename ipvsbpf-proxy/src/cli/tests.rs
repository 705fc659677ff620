use super::*;

fn parse(argv: &[&str]) -> Result<Config, ConfigError> {
    let mut full = vec!["ipvsbpf-proxy"];
    full.extend_from_slice(argv);
    let args = Args::try_parse_from(full).map_err(|e| ConfigError::Conflict {
        field: "clap".into(),
        reason: e.to_string(),
    })?;
    Config::from_args(args)
}

fn ok(argv: &[&str]) -> Config {
    match parse(argv) {
        Ok(c) => c,
        Err(e) => panic!("{argv:?}: {e}"),
    }
}

fn err(argv: &[&str]) -> String {
    match parse(argv) {
        Ok(c) => panic!("{argv:?} accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn cidr(s: &str) -> Cidr {
    match s.parse() {
        Ok(c) => c,
        Err(e) => panic!("{s}: {e}"),
    }
}

/// A config file in a fresh temp dir; the dir lives as long as the path.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!(
            "ipvsbpf-cli-{}-{}",
            std::process::id(),
            name.replace('.', "-")
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }
    fn arg(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn defaults_match_kube_proxy_and_ours() {
    let c = ok(&[]);
    assert_eq!(c.mode, ProxyMode::IpvsBpf);
    assert_eq!(c.kubeconfig, None);
    assert_eq!(c.master, None);
    assert_eq!(c.hostname_override, None);
    assert!(c.cluster_cidrs.is_empty());
    assert_eq!(c.nodeport_addresses, NodePortAddresses::All);
    assert!(!c.masquerade_all);
    assert_eq!(c.ipvs_scheduler, "rr");
    assert_eq!(c.sync_period, Duration::from_secs(30));
    assert_eq!(c.min_sync_period, Duration::from_secs(1));
    assert_eq!(c.ipvs_tcp_timeout, Duration::ZERO);
    assert_eq!(c.ipvs_tcpfin_timeout, Duration::ZERO);
    assert_eq!(c.ipvs_udp_timeout, Duration::ZERO);
    assert!(c.ipvs_exclude_cidrs.is_empty());
    assert!(!c.ipvs_strict_arp);
    assert_eq!(c.healthz_bind_address, "0.0.0.0:10256".parse().ok());
    assert_eq!(c.metrics_bind_address, "127.0.0.1:10249".parse().ok());
    assert!(!c.cleanup);
    assert_eq!(c.verbosity, 0);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.source, SourceKind::Kube);
    assert_eq!(c.manifests, None);
    assert!(!c.fallback_to_ipvs);
    assert!(c.uplinks.is_empty());
    assert_eq!(c.bpf_pin_path, PathBuf::from("/sys/fs/bpf/ipvsbpf"));
    assert_eq!(
        c.snat_port_range,
        PortRange {
            min: 61000,
            max: 65000
        }
    );
    assert_eq!(c.service_proxy_name, None);
    assert_eq!(c.bpf_session_map_entries, 65536);
    // Unlike kube-proxy, no conntrack sysctl is written unless asked.
    assert!(c.conntrack.is_empty(), "{:?}", c.conntrack);
    assert!(c.warnings.is_empty());
    assert_eq!(c.health_timeout(), Duration::from_secs(60));
}

#[test]
fn each_flag_lands_in_its_field() {
    let c = ok(&[
        "--proxy-mode=ipvs",
        "--kubeconfig",
        "/etc/kp.conf",
        "--master=https://10.0.0.1:6443",
        "--hostname-override",
        "  Node-A ",
        "--cluster-cidr=10.244.0.0/16,fd00:244::/56",
        "--nodeport-addresses=192.168.0.0/24, 10.0.0.0/8",
        "--masquerade-all",
        "--ipvs-scheduler=wlc",
        "--ipvs-sync-period=1m0s",
        "--ipvs-min-sync-period=500ms",
        "--ipvs-tcp-timeout=2h",
        "--ipvs-tcpfin-timeout=15s",
        "--ipvs-udp-timeout=1m30s",
        "--ipvs-exclude-cidrs=10.1.0.0/16,10.2.0.0/16",
        "--ipvs-strict-arp=true",
        "--healthz-bind-address=[::]:10266",
        "--metrics-bind-address=0.0.0.0",
        "--cleanup",
        "-v",
        "4",
        "--log-format=json",
        "--source=file",
        "--manifests=/srv/manifests",
        "--fallback-to-ipvs",
        "--uplink=eth0",
        "--uplink",
        "bond0.100",
        "--bpf-pin-path=/sys/fs/bpf/other",
        "--snat-port-range=62000-62999",
        "--service-proxy-name=ipvsbpf",
        "--bpf-session-map-entries=262144",
        "--conntrack-max-per-core=16384",
        "--conntrack-min=65536",
        "--conntrack-tcp-timeout-established=24h0m0s",
        "--conntrack-tcp-timeout-close-wait=1h",
        "--conntrack-tcp-be-liberal",
        "--conntrack-udp-timeout=30s",
        "--conntrack-udp-timeout-stream=2m0s",
    ]);
    assert_eq!(c.mode, ProxyMode::Ipvs);
    assert_eq!(c.kubeconfig, Some(PathBuf::from("/etc/kp.conf")));
    assert_eq!(c.master.as_deref(), Some("https://10.0.0.1:6443"));
    assert_eq!(c.hostname_override.as_deref(), Some("node-a"));
    assert_eq!(
        c.cluster_cidrs,
        vec![cidr("10.244.0.0/16"), cidr("fd00:244::/56")]
    );
    assert_eq!(
        c.nodeport_addresses,
        NodePortAddresses::Cidrs(vec![cidr("192.168.0.0/24"), cidr("10.0.0.0/8")])
    );
    assert!(c.masquerade_all);
    assert_eq!(c.ipvs_scheduler, "wlc");
    assert_eq!(c.sync_period, Duration::from_secs(60));
    assert_eq!(c.min_sync_period, Duration::from_millis(500));
    assert_eq!(c.ipvs_tcp_timeout, Duration::from_secs(7200));
    assert_eq!(c.ipvs_tcpfin_timeout, Duration::from_secs(15));
    assert_eq!(c.ipvs_udp_timeout, Duration::from_secs(90));
    assert_eq!(
        c.ipvs_exclude_cidrs,
        vec![cidr("10.1.0.0/16"), cidr("10.2.0.0/16")]
    );
    assert!(c.ipvs_strict_arp);
    assert_eq!(c.healthz_bind_address, "[::]:10266".parse().ok());
    // An address without port gets kube-proxy's default port.
    assert_eq!(c.metrics_bind_address, "0.0.0.0:10249".parse().ok());
    assert!(c.cleanup);
    assert_eq!(c.verbosity, 4);
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.source, SourceKind::File);
    assert_eq!(c.manifests, Some(PathBuf::from("/srv/manifests")));
    assert!(c.fallback_to_ipvs);
    assert_eq!(c.uplinks, vec!["eth0".to_string(), "bond0.100".to_string()]);
    assert_eq!(c.bpf_pin_path, PathBuf::from("/sys/fs/bpf/other"));
    assert_eq!(
        c.snat_port_range,
        PortRange {
            min: 62000,
            max: 62999
        }
    );
    assert_eq!(c.service_proxy_name.as_deref(), Some("ipvsbpf"));
    assert_eq!(c.bpf_session_map_entries, 262144);
    assert_eq!(
        c.conntrack,
        ConntrackConfig {
            max_per_core: 16384,
            min: 65536,
            tcp_established_timeout: Duration::from_secs(86400),
            tcp_close_wait_timeout: Duration::from_secs(3600),
            tcp_be_liberal: true,
            udp_timeout: Duration::from_secs(30),
            udp_stream_timeout: Duration::from_secs(120),
        }
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn conntrack_section_of_the_file() {
    let f = TempFile::new(
        "ct.yaml",
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
conntrack:
  maxPerCore: 32768
  min: 131072
  tcpEstablishedTimeout: 24h0m0s
  tcpCloseWaitTimeout: 1h0m0s
  tcpBeLiberal: true
  udpTimeout: 30s
  udpStreamTimeout: 2m0s
  tcpMaxRetrans: 3
",
    );
    // The file replaces the flags, as for every field it has.
    let c = ok(&["--config", &f.arg(), "--conntrack-max-per-core=1"]);
    assert_eq!(
        c.conntrack,
        ConntrackConfig {
            max_per_core: 32768,
            min: 131072,
            tcp_established_timeout: Duration::from_secs(86400),
            tcp_close_wait_timeout: Duration::from_secs(3600),
            tcp_be_liberal: true,
            udp_timeout: Duration::from_secs(30),
            udp_stream_timeout: Duration::from_secs(120),
        }
    );
    let w = c.warnings.join("\n");
    assert!(w.contains("conntrack.tcpMaxRetrans: unknown field"), "{w}");
    assert!(
        w.contains("--conntrack-max-per-core is ignored because --config"),
        "{w}"
    );
    assert_eq!(c.warnings.len(), 2, "{w}");

    for (body, needle) in [
        ("maxPerCore: -1", "conntrack.maxPerCore"),
        ("maxPerCore: 2147483648", "0..=2147483647"),
        ("min: many", "conntrack.min"),
        ("tcpBeLiberal: 1", "conntrack.tcpBeLiberal"),
        ("udpTimeout: 30", "conntrack.udpTimeout"),
    ] {
        let f = TempFile::new(
            "ct-bad.yaml",
            &format!(
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nconntrack:\n  {body}\n"
            ),
        );
        let msg = err(&["--config", &f.arg()]);
        assert!(msg.contains(needle), "{body}: {msg}");
    }
}

#[test]
fn small_flag_forms() {
    type Check = fn(&Config) -> bool;
    let cases: &[(&[&str], Check)] = &[
        (&["--nodeport-addresses=primary"], |c| {
            c.nodeport_addresses == NodePortAddresses::Primary
        }),
        (&["--masquerade-all=false"], |c| !c.masquerade_all),
        (&["--v=3"], |c| c.verbosity == 3),
        (&["-v2"], |c| c.verbosity == 2),
        (&["--logging-format=json"], |c| {
            c.log_format == LogFormat::Json
        }),
        (&["--metrics-bind-address="], |c| {
            c.metrics_bind_address.is_none()
        }),
        (&["--healthz-bind-address="], |c| {
            c.healthz_bind_address.is_none()
        }),
        (&["--ipvs-min-sync-period=0"], |c| {
            c.min_sync_period.is_zero()
        }),
        (&["--cluster-cidr=10.244.1.7/16"], |c| {
            c.cluster_cidrs == vec![cidr("10.244.0.0/16")]
        }),
        (&["--proxy-mode=ipvs-bpf"], |c| c.mode == ProxyMode::IpvsBpf),
    ];
    for (argv, check) in cases {
        let c = ok(argv);
        assert!(check(&c), "{argv:?}: {c:?}");
    }
}

#[test]
fn bad_values_name_the_flag() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--proxy-mode=iptables"],
            &["--proxy-mode", "iptables", "does not implement"],
        ),
        (
            &["--proxy-mode=foo"],
            &["--proxy-mode", "unknown proxy mode"],
        ),
        (
            &["--cluster-cidr=10.0.0.0/33"],
            &["--cluster-cidr", "prefix length"],
        ),
        (
            &["--cluster-cidr=10.0.0.0"],
            &["--cluster-cidr", "not a CIDR"],
        ),
        (
            &["--cluster-cidr=10.0.0.0/8,10.1.0.0/16"],
            &["--cluster-cidr", "dual-stack"],
        ),
        (
            &["--nodeport-addresses=primary,10.0.0.0/8"],
            &["--nodeport-addresses", "primary"],
        ),
        (
            &["--nodeport-addresses=eth0"],
            &["--nodeport-addresses", "eth0"],
        ),
        (
            &["--ipvs-scheduler=fastest"],
            &["--ipvs-scheduler", "unknown IPVS scheduler"],
        ),
        (
            &["--ipvs-sync-period=0s"],
            &["--ipvs-sync-period", "greater than 0"],
        ),
        (
            &["--ipvs-sync-period=30"],
            &["--ipvs-sync-period", "missing unit"],
        ),
        (
            &["--ipvs-sync-period=-5s"],
            &["--ipvs-sync-period", "negative"],
        ),
        (
            &["--ipvs-sync-period=5x"],
            &["--ipvs-sync-period", "unknown unit"],
        ),
        (
            &["--ipvs-sync-period=10s", "--ipvs-min-sync-period=20s"],
            &["--ipvs-min-sync-period", "must not exceed"],
        ),
        (
            &["--ipvs-tcp-timeout=1500ms"],
            &["--ipvs-tcp-timeout", "whole seconds"],
        ),
        (&["--ipvs-udp-timeout=abc"], &["--ipvs-udp-timeout"]),
        (
            &["--ipvs-exclude-cidrs=10.0.0.0/8,nope"],
            &["--ipvs-exclude-cidrs", "nope"],
        ),
        (
            &["--healthz-bind-address=localhost:1"],
            &["--healthz-bind-address", "IP:PORT"],
        ),
        (
            &["--metrics-bind-address=1.2.3.4:99999"],
            &["--metrics-bind-address"],
        ),
        (
            &["--hostname-override=   "],
            &["--hostname-override", "empty"],
        ),
        (&["--source=file"], &["--manifests", "required"]),
        (
            &["--manifests=/x"],
            &["--manifests", "only used with --source file"],
        ),
        (&["--uplink=this-name-is-too-long"], &["--uplink"]),
        (&["--uplink=a/b"], &["--uplink"]),
        (
            &["--bpf-pin-path=relative/dir"],
            &["--bpf-pin-path", "absolute"],
        ),
        (
            &["--snat-port-range=65000-61000"],
            &["--snat-port-range", "above"],
        ),
        (
            &["--snat-port-range=61000"],
            &["--snat-port-range", "MIN-MAX"],
        ),
        (
            &["--snat-port-range=0-10"],
            &["--snat-port-range", "1..=65535"],
        ),
        (
            &["--snat-port-range=61000-70000"],
            &["--snat-port-range", "70000"],
        ),
        (
            &["--service-proxy-name=-bad"],
            &["--service-proxy-name", "label value"],
        ),
        (&["--log-format=xml"], &["xml"]),
        (
            &["--bpf-session-map-entries=63"],
            &["--bpf-session-map-entries", "64 (IPVS's minimum)"],
        ),
        (
            &["--bpf-session-map-entries=16777217"],
            &["--bpf-session-map-entries", "16777216"],
        ),
        (&["--bpf-session-map-entries=-1"], &["-1"]),
        (&["--conntrack-max-per-core=lots"], &["lots"]),
        (
            &["--conntrack-tcp-timeout-established=-1s"],
            &["--conntrack-tcp-timeout-established", "negative"],
        ),
        (
            &["--conntrack-udp-timeout=30"],
            &["--conntrack-udp-timeout", "missing unit"],
        ),
        (&["--masquerade-all=maybe"], &["maybe"]),
    ];
    for (argv, needles) in cases {
        let msg = err(argv);
        for n in *needles {
            assert!(msg.contains(n), "{argv:?}: {msg:?} lacks {n:?}");
        }
    }
}

#[test]
fn go_durations() {
    let good: &[(&str, Duration)] = &[
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("30s", Duration::from_secs(30)),
        ("1m0s", Duration::from_secs(60)),
        ("1h2m3s", Duration::from_secs(3723)),
        ("500ms", Duration::from_millis(500)),
        ("1.5s", Duration::from_millis(1500)),
        ("2h22m", Duration::from_secs(2 * 3600 + 22 * 60)),
        ("100us", Duration::from_micros(100)),
        ("100µs", Duration::from_micros(100)),
        ("7ns", Duration::from_nanos(7)),
        ("+5s", Duration::from_secs(5)),
    ];
    for (s, want) in good {
        assert_eq!(parse_go_duration(s).as_ref(), Ok(want), "{s}");
    }
    for bad in ["", "s", "5", "1.2.3s", "-1s", "5d", "1m30", ".s"] {
        assert!(parse_go_duration(bad).is_err(), "{bad:?} accepted");
    }
    let fmt: &[(Duration, &str)] = &[
        (Duration::ZERO, "0s"),
        (Duration::from_secs(30), "30s"),
        (Duration::from_secs(60), "1m0s"),
        (Duration::from_secs(3723), "1h2m3s"),
        (Duration::from_millis(500), "500ms"),
        (Duration::from_millis(1500), "1.5s"),
    ];
    for (d, want) in fmt {
        assert_eq!(format_go_duration(*d), *want);
        assert_eq!(parse_go_duration(want).as_ref(), Ok(d), "round trip {want}");
    }
}

#[test]
fn cidr_contains_and_masks() {
    let c = cidr("10.244.3.9/16");
    assert_eq!(c.to_string(), "10.244.0.0/16");
    assert!(c.contains("10.244.255.1".parse().expect("ip")));
    assert!(!c.contains("10.245.0.1".parse().expect("ip")));
    assert!(!c.contains("::1".parse().expect("ip")));
    let z = cidr("0.0.0.0/0");
    assert!(z.contains("8.8.8.8".parse().expect("ip")));
    let v6 = cidr("fd00::1/64");
    assert_eq!(v6.to_string(), "fd00::/64");
    assert!(v6.contains("fd00::ffff".parse().expect("ip")));
    assert!(!v6.contains("fd01::1".parse().expect("ip")));
    assert!(cidr("1.2.3.4/32").contains("1.2.3.4".parse().expect("ip")));
}

const YAML: &str = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
hostnameOverride: Worker-1
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
nodePortAddresses: ["192.168.1.0/24"]
masqueradeAll: true
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 0.0.0.0:10249
ipvs:
  scheduler: lc
  syncPeriod: 1m0s
  minSyncPeriod: 0s
  tcpTimeout: 900s
  tcpFinTimeout: 30s
  udpTimeout: 5m
  excludeCIDRs:
  - 10.9.0.0/16
  strictARP: true
logging:
  verbosity: 2
  format: json
conntrack:
  maxPerCore: null
iptables:
  masqueradeBit: 14
bogusField: 1
"#;

fn check_file_config(c: &Config) {
    assert_eq!(c.mode, ProxyMode::Ipvs);
    assert_eq!(
        c.kubeconfig,
        Some(PathBuf::from("/var/lib/kube-proxy/kubeconfig.conf"))
    );
    assert_eq!(c.hostname_override.as_deref(), Some("worker-1"));
    assert_eq!(
        c.cluster_cidrs,
        vec![cidr("10.244.0.0/16"), cidr("fd00:10:244::/56")]
    );
    assert_eq!(
        c.nodeport_addresses,
        NodePortAddresses::Cidrs(vec![cidr("192.168.1.0/24")])
    );
    assert!(c.masquerade_all);
    assert_eq!(c.healthz_bind_address, "0.0.0.0:10256".parse().ok());
    assert_eq!(c.metrics_bind_address, "0.0.0.0:10249".parse().ok());
    assert_eq!(c.ipvs_scheduler, "lc");
    assert_eq!(c.sync_period, Duration::from_secs(60));
    assert_eq!(c.min_sync_period, Duration::ZERO);
    assert_eq!(c.ipvs_tcp_timeout, Duration::from_secs(900));
    assert_eq!(c.ipvs_tcpfin_timeout, Duration::from_secs(30));
    assert_eq!(c.ipvs_udp_timeout, Duration::from_secs(300));
    assert_eq!(c.ipvs_exclude_cidrs, vec![cidr("10.9.0.0/16")]);
    assert!(c.ipvs_strict_arp);
    assert_eq!(c.verbosity, 2);
    assert_eq!(c.log_format, LogFormat::Json);
}

#[test]
fn yaml_config_file() {
    let f = TempFile::new("kp.yaml", YAML);
    let c = ok(&["--config", &f.arg()]);
    check_file_config(&c);
    // Unknown field and a set-but-unused one warn; zero-valued known
    // ones (qps: 0, conntrack.maxPerCore: null) do not.
    let w = c.warnings.join("\n");
    assert!(w.contains("bogusField: unknown field"), "{w}");
    assert!(w.contains("iptables: not used"), "{w}");
    assert!(!w.contains("qps"), "{w}");
    assert!(!w.contains("conntrack"), "{w}");
    assert_eq!(c.warnings.len(), 2, "{w}");
}

#[test]
fn json_config_file() {
    let json = serde_json::json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "ipvs",
        "clientConnection": {"kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf"},
        "hostnameOverride": "Worker-1",
        "clusterCIDR": "10.244.0.0/16,fd00:10:244::/56",
        "nodePortAddresses": ["192.168.1.0/24"],
        "masqueradeAll": true,
        "healthzBindAddress": "0.0.0.0:10256",
        "metricsBindAddress": "0.0.0.0:10249",
        "ipvs": {
            "scheduler": "lc", "syncPeriod": "1m0s", "minSyncPeriod": "0s",
            "tcpTimeout": "900s", "tcpFinTimeout": "30s", "udpTimeout": "5m",
            "excludeCIDRs": ["10.9.0.0/16"], "strictARP": true,
            "newThing": "x"
        },
        "logging": {"verbosity": 2, "format": "json"}
    });
    let f = TempFile::new("kp.json", &json.to_string());
    let c = ok(&["--config", &f.arg()]);
    check_file_config(&c);
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("ipvs.newThing: unknown field"));
}

/// kubeadm writes every field, most at their zero value; those mean
/// "default", without warnings.
#[test]
fn kubeadm_style_zero_values_default() {
    let f = TempFile::new(
        "kubeadm.yaml",
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection: {acceptContentTypes: "", burst: 0, contentType: "", kubeconfig: /var/lib/kube-proxy/kubeconfig.conf, qps: 0}
clusterCIDR: ""
configSyncPeriod: 0s
conntrack: {maxPerCore: null, min: null, tcpCloseWaitTimeout: null, tcpEstablishedTimeout: null}
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables: {masqueradeAll: false, masqueradeBit: null, minSyncPeriod: 0s, syncPeriod: 0s}
ipvs: {excludeCIDRs: null, minSyncPeriod: 0s, scheduler: "", strictARP: false, syncPeriod: 0s, tcpFinTimeout: 0s, tcpTimeout: 0s, udpTimeout: 0s}
metricsBindAddress: ""
mode: ""
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel: {enableDSR: false, networkName: "", sourceVip: ""}
"#,
    );
    let c = ok(&["--config", &f.arg()]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.mode, ProxyMode::IpvsBpf);
    assert_eq!(c.ipvs_scheduler, "rr");
    assert_eq!(c.sync_period, DEFAULT_SYNC_PERIOD);
    // An explicit 0 minSyncPeriod is a value, as in kube-proxy.
    assert_eq!(c.min_sync_period, Duration::ZERO);
    assert!(c.cluster_cidrs.is_empty());
    assert_eq!(c.nodeport_addresses, NodePortAddresses::All);
    assert_eq!(c.healthz_bind_address, "0.0.0.0:10256".parse().ok());
    assert_eq!(c.metrics_bind_address, "127.0.0.1:10249".parse().ok());
}

#[test]
fn config_file_wins_over_flags_except_hostname_and_logging() {
    let f = TempFile::new("kp-prec.yaml", YAML);
    let c = ok(&[
        "--config",
        &f.arg(),
        "--proxy-mode=ipvs-bpf",
        "--ipvs-scheduler=rr",
        "--masquerade-all=false",
        "--hostname-override=FromFlag",
        "--v=6",
        "--log-format=text",
        "--snat-port-range=63000-63999",
        "--master=https://api:6443",
    ]);
    // File values for the shadowed flags...
    assert_eq!(c.mode, ProxyMode::Ipvs);
    assert_eq!(c.ipvs_scheduler, "lc");
    assert!(c.masquerade_all);
    // ...flags for hostname, logging and flags without a file field.
    assert_eq!(c.hostname_override.as_deref(), Some("fromflag"));
    assert_eq!(c.verbosity, 6);
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(
        c.snat_port_range,
        PortRange {
            min: 63000,
            max: 63999
        }
    );
    assert_eq!(c.master.as_deref(), Some("https://api:6443"));
    let w = c.warnings.join("\n");
    for flag in ["--proxy-mode", "--ipvs-scheduler", "--masquerade-all"] {
        assert!(w.contains(&format!("{flag} is ignored")), "{w}");
    }
    assert!(!w.contains("--hostname-override is ignored"), "{w}");
}

#[test]
fn bad_config_files_name_the_field() {
    let head = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "mode.yaml",
            "mode: iptables\n",
            &["mode", "iptables", "does not implement"],
        ),
        (
            "mode2.yaml",
            "mode: turbo\n",
            &["mode", "unknown proxy mode"],
        ),
        (
            "sync.yaml",
            "ipvs:\n  syncPeriod: 30\n",
            &["ipvs.syncPeriod", "a string"],
        ),
        (
            "sync2.yaml",
            "ipvs:\n  syncPeriod: 3x\n",
            &["ipvs.syncPeriod", "unknown unit"],
        ),
        (
            "sched.yaml",
            "ipvs:\n  scheduler: best\n",
            &["ipvs.scheduler"],
        ),
        (
            "cidr.yaml",
            "clusterCIDR: 10.0.0.0/40\n",
            &["clusterCIDR", "prefix length"],
        ),
        (
            "excl.yaml",
            "ipvs:\n  excludeCIDRs: [x]\n",
            &["ipvs.excludeCIDRs"],
        ),
        (
            "masq.yaml",
            "masqueradeAll: \"yes\"\n",
            &["masqueradeAll", "true or false"],
        ),
        (
            "npa.yaml",
            "nodePortAddresses: \"10.0.0.0/8\"\n",
            &["nodePortAddresses", "list"],
        ),
        (
            "hz.yaml",
            "healthzBindAddress: nowhere\n",
            &["healthzBindAddress", "IP:PORT"],
        ),
        ("ipvs.yaml", "ipvs: 3\n", &["ipvs", "an object"]),
        (
            "log.yaml",
            "logging:\n  format: xml\n",
            &["logging.format", "xml"],
        ),
        (
            "tcp.yaml",
            "ipvs:\n  tcpTimeout: 0.5s\n",
            &["ipvs.tcpTimeout", "whole seconds"],
        ),
    ];
    for (name, body, needles) in cases {
        let f = TempFile::new(name, &format!("{head}{body}"));
        let msg = err(&["--config", &f.arg()]);
        assert!(msg.contains(&f.arg()), "{name}: {msg}");
        for n in *needles {
            assert!(msg.contains(n), "{name}: {msg:?} lacks {n:?}");
        }
    }
    let docs: &[(&str, &str, &str)] = &[
        (
            "kind.yaml",
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: Other\n",
            "kind",
        ),
        (
            "ver.yaml",
            "apiVersion: v1\nkind: KubeProxyConfiguration\n",
            "apiVersion",
        ),
        ("list.yaml", "- a\n- b\n", "not an object"),
        ("broken.json", "{\"kind\": ", "not valid JSON"),
        ("broken.yaml", "kind: [unclosed\n", "not valid YAML"),
    ];
    for (name, body, needle) in docs {
        let f = TempFile::new(name, body);
        let msg = err(&["--config", &f.arg()]);
        assert!(msg.contains(needle), "{name}: {msg}");
    }
    let msg = err(&["--config", "/nonexistent/ipvsbpf/kp.yaml"]);
    assert!(msg.contains("/nonexistent/ipvsbpf/kp.yaml"), "{msg}");
}

#[test]
fn snat_range_against_local_port_range() {
    let f = TempFile::new("ip_local_port_range", "32768\t60999\n");
    let r = |min, max| PortRange { min, max };
    assert!(check_snat_range_against(r(61000, 65000), &f.0).is_ok());
    assert!(check_snat_range_against(r(1024, 32767), &f.0).is_ok());
    for bad in [r(60999, 65000), r(30000, 40000), r(32768, 32768)] {
        let e = check_snat_range_against(bad, &f.0)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("--snat-port-range") && e.contains("32768-60999"),
            "{bad}: {e}"
        );
    }
    let missing = check_snat_range_against(r(1, 2), Path::new("/nonexistent/range"));
    assert!(matches!(missing, Err(ConfigError::Sysctl { .. })));
}

#[test]
fn help_documents_precedence_and_defaults() {
    use clap::CommandFactory;
    let help = Args::command().render_long_help().to_string();
    for needle in [
        "--config",
        "replaces every flag",
        "--hostname-override",
        "[default: 30s]",
        "[default: 0.0.0.0:10256]",
        "[default: 127.0.0.1:10249]",
        "[default: 61000-65000]",
        "--ipvs-min-sync-period",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}");
    }
    Args::command().debug_assert();
}

#[test]
fn modes_print_as_their_flag_values() {
    for (mode, name) in [(ProxyMode::IpvsBpf, "ipvs-bpf"), (ProxyMode::Ipvs, "ipvs")] {
        assert_eq!(mode.to_string(), name);
        assert_eq!(ProxyMode::parse("--proxy-mode", name).ok(), Some(mode));
    }
}

#[test]
fn the_labeller_and_the_probe_are_modes_of_their_own() {
    assert!(!ok(&[]).label_node);
    let c = ok(&["--label-node", "--hostname-override", "Node-A"]);
    assert!(c.label_node && !c.cleanup);
    assert_eq!(c.hostname_override.as_deref(), Some("node-a"));
    // (a rollout's check of the labeller's flags)
    assert!(ok(&["--label-node", "--check-config"]).label_node);
    for argv in [
        &["--label-node", "--cleanup"][..],
        &["--probe-kernel", "--label-node"],
        &["--probe-kernel", "--cleanup"],
    ] {
        let e = err(argv);
        assert!(e.contains("cannot be used with"), "{argv:?}: {e}");
    }
}
