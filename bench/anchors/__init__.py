"""Other systems' published routing policies, re-implemented one per file behind headway's proxy so a
benchmark compares decisions, not proxies. Each file cites its source; the gateway loads one with
`headway gateway --router NAME=bench/anchors/<file>.py:make`."""
