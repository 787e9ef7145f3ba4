"""Several storyroom processes (nodes) on one PostgreSQL: each node's heartbeat, the room
leases that keep a room on exactly one node, and the reaper that frees a dead node's
rooms and interrupts its takes. Embedded mode (SQLite) is a single node and uses none of
it beyond `leases.SingleNode`."""
