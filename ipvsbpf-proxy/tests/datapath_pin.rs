//! A restarted proxy re-adopts its pinned maps: `Datapath::load_pinned`
//! reuses what an earlier load pinned (same map, same entries), creates
//! and pins what is missing, and refuses a pinned map of another size.
//! Needs root. Each test mounts a bpffs of its own, in a mount namespace
//! of its own ([`netns::in_private_bpffs`]): no bpffs mounted by hand, and
//! the host's pins are never seen nor touched.

use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use ipvsbpf_proxy::backends::datapath::{
    self, session_key, session_value, Datapath, Direction, LinkLayer, Options, Protocol,
    MAP_SESSIONS, PINNED_MAPS,
};
use ipvsbpf_proxy::backends::hostinfo;
use netns::in_private_bpffs;

mod netns;

/// The pin directory under a fresh bpffs, as the daemon makes its
/// `--bpf-pin-path` (`/sys/fs/bpf/ipvsbpf`).
fn pin_dir(bpffs: &Path) -> PathBuf {
    let dir = bpffs.join("ipvsbpf");
    std::fs::create_dir(&dir).expect("a directory on the test's bpffs");
    dir
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

/// Loads once with `opts` and lets go: the session map's id.
fn load_once(dir: &Path, opts: &Options) -> u32 {
    let mut storage = MaybeUninit::uninit();
    let dp = Datapath::load_pinned(&mut storage, opts, dir).expect("first load");
    map_id(&dp)
}

#[test]
fn reload_reuses_the_pinned_maps() {
    in_private_bpffs(|bpffs| {
        let dir = pin_dir(bpffs);
        let opts = Options::default();
        let key = session_key(
            Direction::Orig,
            Protocol::Tcp,
            "192.0.2.100:40000".parse().expect("addr"),
            "198.18.2.2:80".parse().expect("addr"),
        )
        .expect("key");

        let mut first = MaybeUninit::uninit();
        let dp = Datapath::load_pinned(&mut first, &opts, &dir).expect("first load");
        for name in PINNED_MAPS {
            assert!(dir.join(name).exists(), "{name} pinned by the first load");
        }
        dp.put_session(
            &key,
            &session_value("192.0.2.1:61000".parse().expect("addr"), true),
        )
        .expect("put");
        let id = map_id(&dp);
        drop(dp);

        let mut second = MaybeUninit::uninit();
        let dp = Datapath::load_pinned(&mut second, &opts, &dir).expect("second load");
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
            Datapath::load_pinned(&mut third, &bigger, &dir).is_err(),
            "a pinned map of another size must be refused"
        );
        assert!(dir.join(MAP_SESSIONS).exists(), "and left in place");
    });
}

/// `--bpf-session-map-entries` changed between runs: the old pin is set
/// aside, the next load makes a map of the new size and the old pin is
/// dropped; a load that fails gets the old pin back; the same size keeps
/// it where it is.
#[test]
fn a_resized_session_map_is_replaced_on_request() {
    in_private_bpffs(|bpffs| {
        let dir = pin_dir(bpffs);
        let opts = Options::default();
        let id = load_once(&dir, &opts);

        assert!(datapath::set_aside_if_resized(&dir, opts.session_entries)
            .expect("same size")
            .is_none());
        assert!(dir.join(MAP_SESSIONS).exists(), "same size: pin kept");

        // A failed load (a size IPVS would refuse) puts the old pin back.
        let aside = datapath::set_aside_if_resized(&dir, 8)
            .expect("resized")
            .expect("set aside");
        assert_eq!(aside.old_entries, opts.session_entries);
        assert!(!dir.join(MAP_SESSIONS).exists(), "old pin moved");
        let mut failed = MaybeUninit::uninit();
        let tiny = Options {
            session_entries: 8,
            ..opts
        };
        assert!(Datapath::load_pinned(&mut failed, &tiny, &dir).is_err());
        aside.restore().expect("restore");
        let mut again = MaybeUninit::uninit();
        let dp = Datapath::load_pinned(&mut again, &opts, &dir).expect("old map adopted");
        assert_eq!(map_id(&dp), id, "the old map, adopted again");
        drop(dp);

        let bigger = Options {
            session_entries: opts.session_entries * 2,
            ..opts
        };
        let aside = datapath::set_aside_if_resized(&dir, bigger.session_entries)
            .expect("resized")
            .expect("set aside");
        let mut second = MaybeUninit::uninit();
        let dp = Datapath::load_pinned(&mut second, &bigger, &dir).expect("load resized");
        aside.drop_old().expect("drop the old pin");
        assert_ne!(map_id(&dp), id, "a new map");
        {
            use libbpf_rs::MapCore;
            assert_eq!(
                dp.skel().maps.ipvs_sessions.max_entries(),
                bigger.session_entries
            );
        }
        assert!(dir.join(MAP_SESSIONS).exists(), "and pinned");
        let left: Vec<_> = std::fs::read_dir(&dir)
            .expect("pin dir")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(left.len(), PINNED_MAPS.len(), "no pin left over: {left:?}");
    });
}

#[test]
fn missing_pins_are_created() {
    in_private_bpffs(|bpffs| {
        let dir = pin_dir(bpffs);
        let opts = Options::default();
        let id = load_once(&dir, &opts);
        // only the stats pin removed: the session map is still reused
        std::fs::remove_file(dir.join(datapath::MAP_STATS)).expect("unpin stats");
        let mut second = MaybeUninit::uninit();
        let dp = Datapath::load_pinned(&mut second, &opts, &dir).expect("reload");
        assert_eq!(map_id(&dp), id);
        assert!(dir.join(datapath::MAP_STATS).exists(), "stats pinned again");
    });
}

/// An upgrade that adds a counter reason, or another fragment map size:
/// those pinned maps are dropped and made anew (their contents are soft
/// state), the session map stays, and the load that follows succeeds
/// where it would otherwise refuse the pinned map.
#[test]
fn counter_and_fragment_maps_of_another_size_are_replaced() {
    use libbpf_rs::libbpf_sys;
    use libbpf_rs::{MapCore, MapHandle, MapType};
    in_private_bpffs(|bpffs| {
        let dir = pin_dir(bpffs);
        let opts = Options::default();
        let id = load_once(&dir, &opts);
        assert!(
            datapath::drop_stale_pins(&dir, &opts)
                .expect("same sizes")
                .is_empty(),
            "same sizes: nothing dropped"
        );

        // An older build's counter map, with fewer reasons
        std::fs::remove_file(dir.join(datapath::MAP_STATS)).expect("unpin stats");
        let old_stats = MapHandle::create(
            MapType::PercpuArray,
            Some("ipvsbpf_stats"),
            4,
            16,
            8,
            &libbpf_sys::bpf_map_create_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
                ..Default::default()
            },
        )
        .expect("a small per-CPU array");
        let mut old_stats = old_stats;
        old_stats
            .pin(dir.join(datapath::MAP_STATS))
            .expect("pin the old counters");
        let smaller = Options {
            frag_entries: opts.frag_entries / 2,
            ..opts
        };
        let mut refused = MaybeUninit::uninit();
        assert!(
            Datapath::load_pinned(&mut refused, &smaller, &dir).is_err(),
            "without dropping them, the load refuses the pinned maps"
        );

        let dropped = datapath::drop_stale_pins(&dir, &smaller).expect("drop");
        let names: Vec<_> = dropped.iter().map(|p| (p.name, p.old_entries)).collect();
        assert_eq!(
            names,
            vec![
                (datapath::MAP_STATS, 8),
                (datapath::MAP_FRAGS, opts.frag_entries)
            ]
        );
        let mut second = MaybeUninit::uninit();
        let dp = Datapath::load_pinned(&mut second, &smaller, &dir).expect("reload");
        assert_eq!(map_id(&dp), id, "the session map is kept");
        assert_eq!(
            dp.skel().maps.ipvsbpf_frags.max_entries(),
            smaller.frag_entries
        );
        assert!(dp.counters().expect("counters").is_empty());
        for name in PINNED_MAPS {
            assert!(dir.join(name).exists(), "{name} pinned");
        }
    });
}

/// `attached` tells whether a device carries our filters, whoever loaded
/// them, and `detach` takes them off (the proxy's start removes an earlier
/// run's from devices it no longer covers): a veth device in a network
/// namespace of the test's own.
#[test]
fn attached_sees_our_filters_until_detached() {
    in_private_bpffs(|bpffs| {
        let dir = pin_dir(bpffs);
        // SAFETY: unshare(2) changes only this thread's network namespace;
        // the commands it runs inherit it.
        assert_eq!(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        netns::run(
            "ip",
            &["link", "add", "t0", "type", "veth", "peer", "name", "t1"],
        );
        let idx = hostinfo::ifindex("t0").expect("t0's index");
        assert!(
            !datapath::attached(idx).expect("no qdisc yet"),
            "a device without clsact"
        );
        let mut storage = MaybeUninit::uninit();
        let dp = Datapath::load_pinned(&mut storage, &Options::default(), &dir).expect("load");
        let _filters = dp.attach(idx, LinkLayer::Ethernet).expect("attach");
        assert!(
            datapath::attached(idx).expect("query"),
            "ours, after attach"
        );
        // another filter on the same hook is not ours
        datapath::detach(idx).expect("detach");
        netns::run(
            "tc",
            &[
                "filter", "add", "dev", "t0", "egress", "pref", "7", "protocol", "all", "u32",
                "match", "u32", "0", "0", "flowid", "1:1",
            ],
        );
        assert!(
            !datapath::attached(idx).expect("query"),
            "after detach, with another filter left on the hook"
        );
        datapath::detach(idx).expect("a second detach finds nothing, and is fine");
        let left = netns::run("tc", &["filter", "show", "dev", "t0", "egress"]);
        assert!(left.contains("u32"), "the other filter stays: {left}");
    });
}
