"""`custody chaos`: exactly-once under faults, on a stack of its own.

    custody chaos -n 200 --seed 1 [--json] [--kms-share 0.3] [--keep]

config.py    what a run does (withdrawals, seed, fault window, settle deadline, fault rates)
stack.py     the stack as separate processes (service.py: one supervised child; postgres.py)
workload.py  wallets, funding and the withdrawals, through the API (client.py: retries)
faults.py    the seeded fault plan and its executor (kills, restarts, reorgs, wire faults)
observe.py   what the database and the real nodes say at the end
checks.py    the verdicts; report.py: the JSON report and its table; run.py: one run
"""
