"""The ``service_agent`` check: may Cloud Tasks mint tokens as the caller account?

Cloud Tasks does not sign a task's OIDC token itself: its service agent,
``service-PROJECT_NUMBER@gcp-sa-cloudtasks.iam.gserviceaccount.com``, mints it as the task's
account (``CALLER_SA``), which needs ``iam.serviceAccounts.getOpenIdToken`` on that account.
Google documents granting it ``roles/iam.serviceAccountTokenCreator`` on the account as
required for projects created before 19 March 2019 (Cloud Tasks' page on HTTP target tasks
with tokens, as the original service's setup step 3 follows it; Cloud Scheduler documents the
same cutoff for its own agent: https://cloud.google.com/scheduler/docs/http-target-auth).
Newer projects give the agent ``roles/cloudtasks.serviceAgent`` on the project, which holds
``iam.serviceAccounts.getOpenIdToken`` and ``getAccessToken``
(https://cloud.google.com/iam/docs/roles-permissions/cloudtasks) and so covers every account
of the project. Without either, every task fails before it reaches the worker.

So: **pass** when the agent holds either role on the account or on the project; **warn**
when neither is seen (it is only *required* for older projects, and this cannot tell the
project's age), with the grant command; **unknown** when the account's policy cannot be
read (``iam.serviceAccounts.getIamPolicy``: ``roles/iam.serviceAccountViewer`` on the
account) or the project's number cannot (``resourcemanager.projects.get``). The project's
policy is read when it may be; unreadable, only the account's grants are seen, and the
evidence says so.
"""

from __future__ import annotations

from enqueuer_core import iam_policies
from enqueuer_core.diagnose.gather import Diagnosis
from enqueuer_core.diagnose.result import Status
from enqueuer_core.setup.desired import (
    SA_VIEWER_ROLE,
    TASKS_AGENT_ROLE,
    TOKEN_CREATOR_ROLE,
    Grant,
    tasks_service_agent,
)
from enqueuer_core.workers import WorkerSpec

TITLE = "Cloud Tasks may mint tokens as the caller account"
# Either lets the agent mint the caller account's OIDC tokens (see the module docstring).
_MINTING_ROLES = (TOKEN_CREATOR_ROLE, TASKS_AGENT_ROLE)


def service_agent(d: Diagnosis, spec: WorkerSpec) -> tuple[Status, str, str | None]:
    sa = d.s.caller_sa or ""
    if "@" not in sa:
        return "unknown", "needs: caller_sa", None
    project = d.s.project_id
    number = d.project_number
    if number.value is None:
        who = iam_policies.member(d.principal) if d.principal else "the account running diagnose"
        return ("unknown", "the project's number names the Cloud Tasks service agent, and it "
                f"could not be read: {number.error or number.missing}",
                f"gcloud projects add-iam-policy-binding {project} --member={who} "
                "--role=roles/browser (resourcemanager.projects.get shows the number)")
    agent = tasks_service_agent(number.value)
    who = iam_policies.member(agent)
    account = d.caller_policy
    if account.missing is not None:
        return "unknown", f"the caller account {sa} does not exist (see act_as)", None
    held = _held(account.value, who)
    if held:
        return "pass", f"{agent} holds {held} on {sa}", None
    on_project = _held(d.project_policy.value, who)
    if on_project:
        return "pass", f"{agent} holds {on_project} on the project {project}", None
    if account.error:
        reader = iam_policies.member(d.principal) if d.principal else "ACCOUNT_RUNNING_DIAGNOSE"
        return ("unknown", f"who may mint tokens as {sa} could not be read: {account.error}",
                f"gcloud iam service-accounts add-iam-policy-binding {sa} --member={reader} "
                f"--role={SA_VIEWER_ROLE} --project={project} (reading the account's policy "
                "needs iam.serviceAccounts.getIamPolicy)")
    seen = ("" if d.project_policy.value is not None else
            f" (the project's policy could not be read: {d.project_policy.error}; a "
            f"{TASKS_AGENT_ROLE} grant there would not be seen)" if d.project_policy.error
            else "")
    grant = Grant("service_account", f"projects/{project}/serviceAccounts/{sa}",
                  TOKEN_CREATOR_ROLE, who, "Cloud Tasks mints the tasks' OIDC tokens as it")
    return ("warn", f"{agent} holds neither {TOKEN_CREATOR_ROLE} on {sa} nor {TASKS_AGENT_ROLE} "
            f"on the project{seen}: Google documents the grant as required for projects "
            "created before 19 March 2019, where every task then fails without its OIDC token",
            grant.gcloud())


def _held(policy: object, who: str) -> str | None:
    if policy is None:
        return None
    roles = iam_policies.roles_of(policy, who)  # type: ignore[arg-type]
    return next((r for r in _MINTING_ROLES if r in roles), None)
