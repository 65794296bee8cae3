//! Tests of scenario files: parsing, validation and their refusals.

use super::*;

const PROTEST: &str = r#"
name = "protest-fork"
description = "fork"
[network]
order_servers = 3
members = ["alice", "bob", "charlie", "dave"]
[adversary]
router = { strategy = "fork", partition = [["alice", "bob"], ["charlie", "dave"]] }
order_servers = [ { server = 0, strategy = "equivocate" }, { server = 1, strategy = "equivocate" } ]
[[script]]
from = "alice"
send = "Meet at the square at noon."
[[script]]
from = "alice"
remove = "dave"
[expect]
outcome = "detected"
integrity = true
alerts = ["conflicting_heads"]
"#;

#[test]
fn the_protest_scenario_parses() {
    let s = Scenario::parse("protest.toml", PROTEST).unwrap();
    assert_eq!(s.network.quorum(), 3);
    assert_eq!(s.network.admins(), vec!["alice".to_owned()]);
    assert_eq!(s.adversary.dishonest_servers(), 2);
    assert_eq!(s.expect.outcome, Outcome::Detected);
    assert_eq!(
        s.adversary.describe(),
        "router: fork; order server 0: equivocate, order server 1: equivocate"
    );
}

#[test]
fn impossible_scenarios_are_refused_with_a_reason() {
    let cases = [
        (
            PROTEST.replace("order_servers = 3", "order_servers = 0"),
            "order_servers",
        ),
        (
            PROTEST.replace("[\"alice\", \"bob\"], [", "[\"alice\"], ["),
            "partition",
        ),
        (
            PROTEST.replace("server = 1", "server = 0"),
            "two strategies",
        ),
        (
            PROTEST.replace("server = 1", "server = 7"),
            "order server 7",
        ),
        (PROTEST.replace("conflicting_heads", "nonsense"), "nonsense"),
        (
            PROTEST.replace("remove = \"dave\"", "remove = \"dave\"\nleave = true"),
            "exactly one action",
        ),
        (
            PROTEST.replace("from = \"alice\"\nsend", "from = \"zed\"\nsend"),
            "zed",
        ),
    ];
    for (text, needle) in cases {
        let err = Scenario::parse("x.toml", &text).unwrap_err().to_string();
        assert!(err.contains(needle), "{err} should mention {needle}");
    }
    let mallory = |step: &str, extra: &str| {
        format!(
            "name = \"m\"\ndescription = \"d\"\n[network]\norder_servers = 3\nmembers = [\"alice\", \"mallory\", \"bob\"]\n{extra}[adversary]\ncompromised_members = [\"mallory\"]\n[[script]]\n{step}\n[expect]\noutcome = \"prevented\"\nintegrity = true\n"
        )
    };
    let toolkit = [
        (
            mallory("from = \"bob\"\nmisbehave = \"wrong_epoch\"", ""),
            "not a compromised member",
        ),
        (
            mallory("from = \"mallory\"\nmisbehave = \"swap_slots\"", ""),
            "needs an admin",
        ),
        (
            mallory(
                "from = \"mallory\"\nmisbehave = \"non_admin_update\"",
                "admins = [\"alice\", \"mallory\"]\n",
            ),
            "not an admin",
        ),
        (
            mallory("from = \"mallory\"\nmisbehave = \"oversize\"", ""),
            "max_block_digests",
        ),
        (
            mallory(
                "from = \"mallory\"\nmisbehave = \"oversize\"",
                "order_server_limits = { max_block_digests = 5000 }\n",
            ),
            "max_block_digests",
        ),
        (
            mallory(
                "from = \"mallory\"\nmisbehave = \"wrong_epoch\"\nsend = \"hi\"",
                "",
            ),
            "exactly one action",
        ),
    ];
    for (text, needle) in toolkit {
        let err = Scenario::parse("x.toml", &text).unwrap_err().to_string();
        assert!(err.contains(needle), "{err} should mention {needle}");
    }
    let fine = mallory(
        "from = \"mallory\"\nmisbehave = \"oversize\"",
        "order_server_limits = { max_block_digests = 16 }\n",
    );
    let s = Scenario::parse("x.toml", &fine).unwrap();
    assert_eq!(s.network.server_limits().max_block_digests, 16);
    assert_eq!(
        s.network.server_limits().max_slots,
        grompi_proto::limits::MAX_SLOTS
    );
    let group = [
        (
            PROTEST.replace("remove = \"dave\"", "rekey = true"),
            "group_period",
        ),
        (
            PROTEST.replace("send = \"Meet", "with_previous = true\nsend = \"Meet"),
            "no step before it",
        ),
        (
            PROTEST.replace(
                "{ server = 1, strategy = \"equivocate\" }",
                "{ server = 1, strategy = \"bad_key_shares\", victims = [\"bob\"] }",
            ),
            "group-keyed",
        ),
        (
            PROTEST
                .replace("members = [", "group_period = 2\nmembers = [")
                .replace(
                    "{ server = 1, strategy = \"equivocate\" }",
                    "{ server = 1, strategy = \"bad_key_shares\", victims = [\"zed\"] }",
                ),
            "zed",
        ),
        (
            PROTEST.replace(
                "{ server = 1, strategy = \"equivocate\" }",
                "{ server = 1, strategy = \"equivocate\", victims = [\"bob\"] }",
            ),
            "takes no victims",
        ),
        (
            PROTEST.replace("members = [", "group_period = 0\nmembers = ["),
            "at least 1",
        ),
        (
            mallory(
                "from = \"mallory\"\nmisbehave = \"bad_rn1\"",
                "admins = [\"alice\", \"mallory\"]\n",
            ),
            "bad_rn1 needs an admin in a group-keyed conversation",
        ),
        (
            mallory(
                "from = \"mallory\"\nmisbehave = \"bad_rn1\"",
                "group_period = 3\n",
            ),
            "bad_rn1 needs an admin in a group-keyed conversation",
        ),
    ];
    for (text, needle) in group {
        let err = Scenario::parse("x.toml", &text).unwrap_err().to_string();
        assert!(err.contains(needle), "{err} should mention {needle}");
    }
    let keyed = PROTEST
        .replace("members = [", "group_period = 2\nmembers = [")
        .replace("remove = \"dave\"", "rekey = true\nwith_previous = true")
        .replace(
            "{ server = 1, strategy = \"equivocate\" }",
            "{ server = 1, strategy = \"bad_key_shares\", victims = [\"bob\"] }",
        );
    let s = Scenario::parse("x.toml", &keyed).unwrap();
    assert_eq!(s.network.group_period, Some(2));
    assert!(s.script[1].rekey && s.script[1].with_previous);
    assert_eq!(
        s.adversary.order_servers[1].strategy,
        OrderServerStrategy::BadKeyShares {
            victims: vec!["bob".into()]
        }
    );
    let unknown_key = PROTEST.replace("server = 1,", "server = 1, bogus = 2,");
    assert!(Scenario::parse("x.toml", &unknown_key).is_err());
    assert!(matches!(
        Scenario::parse("x.toml", "name = 1"),
        Err(ScenarioError::Syntax { .. })
    ));
}
