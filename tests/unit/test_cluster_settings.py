"""The cluster's settings: a node id that HAProxy and a URL can carry unescaped, and
heartbeat, dead-after and reap intervals that cannot call a live node dead."""

from __future__ import annotations

import pytest

from storyroom.config import Settings, SettingsError


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STORYROOM_NODE_ID": "node 1"}, "node_id 'node 1'"),
        ({"STORYROOM_NODE_ID": "-node"}, "node_id '-node'"),
        ({"STORYROOM_NODE_ID": "n" * 65}, "node_id"),
        ({"STORYROOM_NODE_ID": "nœud"}, "node_id"),
        ({"STORYROOM_NODE_ID": "a/b"}, "node_id"),
        ({"STORYROOM_NODE_HEARTBEAT_S": "0"}, "node_heartbeat_s"),
        ({"STORYROOM_NODE_HEARTBEAT_S": "often"}, "STORYROOM_NODE_HEARTBEAT_S"),
        ({"STORYROOM_NODE_HEARTBEAT_S": "61"}, "node_heartbeat_s"),
        ({"STORYROOM_NODE_DEAD_AFTER_S": "4"}, "node_dead_after_s"),  # two beats of 2 s
        ({"STORYROOM_NODE_DEAD_AFTER_S": "7200"}, "node_dead_after_s"),
        (
            {"STORYROOM_NODE_HEARTBEAT_S": "10", "STORYROOM_NODE_DEAD_AFTER_S": "15"},
            "more than two heartbeats",
        ),
        ({"STORYROOM_NODE_REAP_INTERVAL_S": "0"}, "node_reap_interval_s"),
        ({"STORYROOM_NODE_REAP_INTERVAL_S": "-1"}, "node_reap_interval_s"),
    ],
)
def test_bad_cluster_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.load(environ=env)


def test_cluster_defaults_and_a_good_node_id() -> None:
    default = Settings.load(environ={})
    assert (default.node_id, default.node_heartbeat_s, default.node_dead_after_s) == ("", 2.0, 15.0)
    assert default.node_reap_interval_s == 5.0
    named = Settings.load(environ={"STORYROOM_NODE_ID": "node-1.eu_west"})
    assert named.node_id == "node-1.eu_west"
