"""`reproduce`: every WarmServe paper claim as experiments of the results store, with verdicts.

Modules: `claims` (each claim's experiments and its number), `verdicts` (the verdict rules, the
table row they fill and the run readers they use), `sensitivity` (the assumptions the paper leaves
open, varied one at a time), `document` (REPRODUCTION.md and reproduction.html). The command is
`harness/commands/reproduce.py`.
"""
