"""Systems under test: `systems.sim` (simulated policies) and `systems.live` (real endpoints)."""
