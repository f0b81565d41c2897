"""Validation of the simulator against published third-party measurements (`bench fidelity`).

`table` reads the validation CSV (the shipped `published.csv`, or a user's in the same format);
`serving` re-simulates its serving rows. Start-cost rows are simulated by
`systems.sim.fidelity_starts.simulate_start_row` when that module exists.
"""
