"""``enqueuer setup``: the state of Google this config needs, against what Google holds now, and
the changes that make them match, applied on request.

``desired`` computes the accounts, queues and bindings (pure); ``plan`` reads Google and
compares; ``apply`` makes the changes through the Google APIs, as the platform engineer
running it (never as the enqueuer's own account).
"""

from enqueuer_core.setup.apply import SetupRefused, apply_plan
from enqueuer_core.setup.desired import DesiredState, Grant, desired_state
from enqueuer_core.setup.plan import CHANGES, Change, SetupClients, SetupPlan, make_plan

__all__ = ["CHANGES", "Change", "DesiredState", "Grant", "SetupClients", "SetupPlan",
           "SetupRefused", "apply_plan", "desired_state", "make_plan"]
