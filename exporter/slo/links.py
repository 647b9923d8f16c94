"""Links from an alert to the shipped Grafana dashboards: the ``dashboard_url``
annotation of the static alerts (``dashboards/rules.py``) and of the burn-rate
alerts. They are built here, not in ``dashboards/``, because the package ships
without the generators and ``rules export --slos`` builds its links at run time.

A link is ``<grafana>/d/<uid>/<uid>?`` and its parameters: ``var-<name>=`` for a
variable of the dashboard, and a time range (``from=`` and ``to=``).
"""

from __future__ import annotations

from exporter.metrics import names as n

# The uids of dashboards/common.py, which the dashboard link check holds these to.
HISTORY_UID = "taskiq-history"
TASK_DETAIL_UID = "taskiq-task-detail"
# Prometheus fills the alert's task in; urlquery is Go's url.QueryEscape.
TASK_PARAM = f"var-{n.LABEL_TASK_NAME}={{{{ $labels.{n.LABEL_TASK_NAME} | urlquery }}}}"


def dashboard_url(uid: str, *params: str) -> str:
    """The path and query of dashboard ``uid`` (its slug is its uid)."""
    return f"/d/{uid}/{uid}?" + "&".join(params)


def alert_url(grafana: str, uid: str, *params: str) -> str:
    """An alert annotation's link (Prometheus templates fill the values in)."""
    return f"{grafana}{dashboard_url(uid, *params)}"


def last(seconds: int) -> tuple[str, str]:
    """The time range of the last ``seconds``, in hours or minutes where they divide it."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"from=now-{seconds // size}{unit}", "to=now"
    return f"from=now-{seconds}s", "to=now"
