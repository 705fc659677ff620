//! A restarted proxy re-adopts its pinned maps: `Datapath::load_pinned`
//! reuses what an earlier load pinned (same map, same entries), creates
//! and pins what is missing, and refuses a pinned map of another size.
//! Needs root and a bpffs at /sys/fs/bpf (the host and the guest have one).

use std::mem::MaybeUninit;
use std::path::PathBuf;

use ipvsbpf_proxy::datapath::{
    self, session_key, session_value, Datapath, Direction, Options, Protocol, MAP_SESSIONS,
    PINNED_MAPS,
};

/// A fresh directory on the bpffs, removed (pins first) when dropped.
struct PinDir(PathBuf);

impl PinDir {
    fn new(tag: &str) -> PinDir {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/ipvsbpf-test-{tag}-{}",
            std::process::id()
        ));
        let _ = datapath::unpin(&dir);
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).expect("creating a directory on /sys/fs/bpf (root, bpffs)");
        PinDir(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = datapath::unpin(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn map_id(dp: &Datapath<'_>) -> u32 {
    use libbpf_rs::MapCore;
    dp.skel()
        .maps
        .ipvs_sessions
        .info()
        .expect("map info")
        .info
        .id
}

#[test]
fn reload_reuses_the_pinned_maps() {
    let dir = PinDir::new("reuse");
    let opts = Options::default();
    let key = session_key(
        Direction::Orig,
        Protocol::Tcp,
        "192.0.2.100:40000".parse().expect("addr"),
        "198.18.2.2:80".parse().expect("addr"),
    )
    .expect("key");

    let mut first = MaybeUninit::uninit();
    let dp = Datapath::load_pinned(&mut first, &opts, &dir.0).expect("first load");
    for name in PINNED_MAPS {
        assert!(dir.0.join(name).exists(), "{name} pinned by the first load");
    }
    dp.put_session(
        &key,
        &session_value("192.0.2.1:61000".parse().expect("addr"), true),
    )
    .expect("put");
    let id = map_id(&dp);
    drop(dp);

    let mut second = MaybeUninit::uninit();
    let dp = Datapath::load_pinned(&mut second, &opts, &dir.0).expect("second load");
    assert_eq!(map_id(&dp), id, "the same session map, not a new one");
    assert_eq!(dp.session_count(), 1, "the session written before survives");
    drop(dp);

    // A map of another size is not silently replaced
    let mut third = MaybeUninit::uninit();
    let bigger = Options {
        session_entries: opts.session_entries * 2,
        ..opts
    };
    assert!(
        Datapath::load_pinned(&mut third, &bigger, &dir.0).is_err(),
        "a pinned map of another size must be refused"
    );
    assert!(dir.0.join(MAP_SESSIONS).exists(), "and left in place");
}

#[test]
fn missing_pins_are_created() {
    let dir = PinDir::new("create");
    let opts = Options::default();
    let mut first = MaybeUninit::uninit();
    let dp = Datapath::load_pinned(&mut first, &opts, &dir.0).expect("load");
    let id = map_id(&dp);
    drop(dp);
    // only the stats pin removed: the session map is still reused
    std::fs::remove_file(dir.0.join(datapath::MAP_STATS)).expect("unpin stats");
    let mut second = MaybeUninit::uninit();
    let dp = Datapath::load_pinned(&mut second, &opts, &dir.0).expect("reload");
    assert_eq!(map_id(&dp), id);
    assert!(
        dir.0.join(datapath::MAP_STATS).exists(),
        "stats pinned again"
    );
}
