use std::sync::Mutex;

use super::*;

const ID: &str = "9286e9eeb8f21c310da19c0a08627dae4e753c3084ca5527bdff5e49314ffef6";
const LIVE: &str = "0e64f02ac5163bb63337c6f6a9cce17ee6e5ad4336a845c10043763ebf12ffe4";

/// What `iptables -t nat -S` showed here for a leftover masquerade chain
/// (ID, as an interrupted StopPodSandbox left it) beside a live pod with
/// a host port (LIVE), on network `corral-ct0`, plus another runtime's
/// pod and portmap's shared chains.
fn table() -> String {
    let masq = chain_names("corral-ct0", ID)[0].clone();
    let [live_masq, live_dn] = chain_names("corral-ct0", LIVE);
    let [other_masq, _] = chain_names("other-net", ID);
    format!(
        r#"-P PREROUTING ACCEPT
-P POSTROUTING ACCEPT
-N {masq}
-N {live_masq}
-N {live_dn}
-N {other_masq}
-N CNI-HOSTPORT-DNAT
-N CNI-HOSTPORT-MASQ
-N CNI-HOSTPORT-SETMARK
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A POSTROUTING -s 10.77.147.9/32 -m comment --comment "name: \"corral-ct0\" id: \"{ID}\"" -j {masq}
-A POSTROUTING -s 10.77.147.2/32 -m comment --comment "name: \"corral-ct0\" id: \"{LIVE}\"" -j {live_masq}
-A POSTROUTING -s 10.99.0.2/32 -m comment --comment "name: \"other-net\" id: \"{ID}\"" -j {other_masq}
-A {masq} -d 10.77.147.0/24 -m comment --comment "name: \"corral-ct0\" id: \"{ID}\"" -j ACCEPT
-A {masq} ! -d 224.0.0.0/4 -m comment --comment "name: \"corral-ct0\" id: \"{ID}\"" -j MASQUERADE
-A {live_masq} ! -d 224.0.0.0/4 -m comment --comment "name: \"corral-ct0\" id: \"{LIVE}\"" -j MASQUERADE
-A {live_dn} -p tcp -m tcp --dport 38481 -j DNAT --to-destination 10.77.147.2:38481
-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"corral-ct0\" id: \"{LIVE}\"" -m multiport --dports 38481 -j {live_dn}
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
"#
    )
}

#[test]
fn words_are_split_as_iptables_quotes_them() {
    let w = split_words(r#"-A X -m comment --comment "name: \"n\" id: \"i\"" -j Y"#).unwrap();
    assert_eq!(
        w,
        [
            "-A",
            "X",
            "-m",
            "comment",
            "--comment",
            r#"name: "n" id: "i""#,
            "-j",
            "Y"
        ]
    );
    assert_eq!(split_words(r#"-A X "a\\b""#).unwrap(), ["-A", "X", r"a\b"]);
    assert_eq!(split_words(r#"-A X """#).unwrap(), ["-A", "X", ""]);
    assert!(split_words(r#"-A X "open"#).is_none());
}

#[test]
fn owners_come_from_bridge_and_portmap_comments() {
    assert_eq!(owner(r#"name: "n1" id: "abc""#), Some(("n1", "abc")));
    assert_eq!(owner(r#"dnat name: "n1" id: "abc""#), Some(("n1", "abc")));
    assert_eq!(owner("CNI portfwd requiring masquerade"), None);
}

#[test]
fn chain_names_are_the_cni_plugins() {
    // As the bridge plugin and portmap named them for this pod here.
    let [masq, dn] = chain_names(
        "corral-ct27076x0",
        "0e64f02ac5163bb63337c6f6a9cce17ee6e5ad4336a845c10043763ebf12ffe4",
    );
    assert_eq!(masq, "CNI-0ca0af166acfd10a68a52499");
    assert_eq!(dn, "CNI-DN-0ca0af166acfd10a68a52");
}

#[test]
fn only_leftovers_of_gone_sandboxes_of_our_networks_are_planned() {
    let t = parse_table(&table());
    let c = plan(&t, &["corral-ct0"], |id| id == ID);
    let masq = chain_names("corral-ct0", ID)[0].clone();
    assert_eq!(c.chains, BTreeSet::from([masq.clone()]));
    // The jump from POSTROUTING; the rules inside the chain go with it.
    assert_eq!(c.rules.len(), 1, "{:?}", c.rules);
    assert_eq!(c.rules[0].chain, "POSTROUTING");
    assert_eq!(c.rules[0].jump(), Some(masq.as_str()));
    // Nothing when every sandbox lives, nor for another network.
    assert!(plan(&t, &["corral-ct0"], |_| false).is_empty());
    assert!(plan(&t, &["nope"], |_| true).is_empty());
}

#[test]
fn a_gone_pod_with_a_host_port_loses_its_dnat_chain_and_jump() {
    let t = parse_table(&table());
    let c = plan(&t, &["corral-ct0"], |id| id == LIVE);
    let [masq, dn] = chain_names("corral-ct0", LIVE);
    assert_eq!(c.chains, BTreeSet::from([masq, dn.clone()]));
    let chains: Vec<&str> = c.rules.iter().map(|r| r.chain.as_str()).collect();
    assert_eq!(chains, ["POSTROUTING", "CNI-HOSTPORT-DNAT"]);
    assert!(!c.chains.iter().any(|c| c.starts_with("CNI-HOSTPORT")));
}

#[test]
fn chains_without_a_rule_naming_them_are_found_by_name() {
    // The jump went, the chain stayed (portmap's DNAT rules carry no
    // comment).
    let [_, dn] = chain_names("corral-ct0", ID);
    let t = parse_table(&format!(
        "-N {dn}\n-A {dn} -p tcp -m tcp --dport 1 -j DNAT --to-destination 10.0.0.2:1\n"
    ));
    assert!(plan(&t, &["corral-ct0"], |_| true).is_empty());
    let c = plan_for_ids(&t, &["corral-ct0"], &BTreeSet::from([ID.to_string()]));
    assert_eq!(c.chains, BTreeSet::from([dn]));
}

#[derive(Default)]
struct Recording {
    table: String,
    calls: Mutex<Vec<String>>,
}

impl Iptables for Recording {
    fn list(&self) -> io::Result<String> {
        Ok(self.table.clone())
    }
    fn run(&self, args: &[String]) -> io::Result<()> {
        self.calls.lock().unwrap().push(args.join(" "));
        Ok(())
    }
}

#[test]
fn apply_deletes_jumps_then_flushes_and_deletes_chains() {
    let ipt = Recording {
        table: table(),
        ..Default::default()
    };
    let t = parse_table(&ipt.list().unwrap());
    let c = plan(&t, &["corral-ct0"], |id| id == ID);
    let (done, errors) = apply(&ipt, &c);
    assert!(errors.is_empty());
    assert_eq!(done, 2);
    let masq = chain_names("corral-ct0", ID)[0].clone();
    assert_eq!(
        *ipt.calls.lock().unwrap(),
        [
            format!(
                "-D POSTROUTING -s 10.77.147.9/32 -m comment --comment name: \"corral-ct0\" id: \"{ID}\" -j {masq}"
            ),
            format!("-F {masq}"),
            format!("-X {masq}"),
        ]
    );
}

#[test]
fn networks_and_lease_dirs_come_from_the_runtime_status() {
    // containerd's cniconfig, as seen here (shortened).
    let bridge =
        r#"{"bridge":"ct0","ipam":{"dataDir":"/x/ipam","type":"host-local"},"type":"bridge"}"#;
    let info = serde_json::json!({
        "Networks": [
            {"Config": {"Name": "cni-loopback", "Plugins": [{"Source": "{\"type\":\"loopback\"}"}]}},
            {"Config": {"Name": "corral-ct0", "Plugins": [
                {"Source": bridge},
                {"Source": "{\"type\":\"portmap\"}"}
            ]}},
            {"Config": {"Name": "plain", "Plugins": [
                {"Source": "{\"type\":\"bridge\",\"ipam\":{\"type\":\"host-local\"}}"}
            ]}},
            {"Config": {"Name": "dhcp", "Plugins": [
                {"Source": "{\"type\":\"macvlan\",\"ipam\":{\"type\":\"dhcp\"}}"}
            ]}}
        ]
    });
    let nets = networks_from_info(&HashMap::from([(
        "cniconfig".to_string(),
        info.to_string(),
    )]));
    assert_eq!(
        nets,
        [
            CniNetwork {
                name: "corral-ct0".into(),
                lease_dir: Some(PathBuf::from("/x/ipam/corral-ct0")),
            },
            CniNetwork {
                name: "plain".into(),
                lease_dir: Some(PathBuf::from("/var/lib/cni/networks/plain")),
            },
            CniNetwork {
                name: "dhcp".into(),
                lease_dir: None,
            },
        ]
    );
    assert!(networks_from_info(&HashMap::new()).is_empty());
}

#[test]
fn leases_are_read_and_removed_under_the_lock() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("10.0.0.2"), format!("{ID}\r\neth0")).unwrap();
    std::fs::write(d.path().join("10.0.0.3"), format!("{LIVE}\r\neth0")).unwrap();
    std::fs::write(d.path().join("last_reserved_ip.0"), "10.0.0.3").unwrap();
    std::fs::write(d.path().join("lock"), "").unwrap();
    let l = leases(d.path());
    let ids: Vec<&str> = l.values().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, [ID, LIVE]);
    let gone: Vec<PathBuf> = l
        .iter()
        .filter(|(_, (id, _))| id == ID)
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(remove_leases(d.path(), &gone).unwrap(), 1);
    assert!(!d.path().join("10.0.0.2").exists());
    assert!(d.path().join("10.0.0.3").exists());
    assert!(d.path().join("last_reserved_ip.0").exists());
    assert_eq!(remove_leases(d.path(), &gone).unwrap(), 0);
}
