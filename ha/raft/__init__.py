"""Raft for the cluster's quorum queues and definitions (issue 13 item 6): a sans-IO member
(``member``), its durable log (``storage``), a message codec (``codec``), a trio runner
(``runtime``) and a deterministic simulation (``sim``). See ARCHITECTURE.md, "Consensus"."""
