"""What the fleet can be made of, and what each node serves: the catalog of instance types
and offerings (`catalog`), the capacity profiles (`profiles`), one node's capacity
(`capacity`: the one function every caller uses) and boot time (`boot`).
"""
