"""Enqueuer's dashboard: `streamlit run dashboard.py` (the local stack serves it on 8501).

The entry only routes: page config, the settings check, and st.navigation over pages/.
Each page is addressed by its file (`pages/queues.py`, for st.page_link and
AppTest.switch_page) and by its URL path (`/queues?queue=...&task=...`).
"""

from __future__ import annotations

import streamlit as st

from pages import common

st.set_page_config(page_title="Enqueuer", layout="wide", page_icon=":material/send:")

# Auth gate: no authentication exists yet. It goes here, before any page runs, e.g.
# `if not st.user.is_logged_in: st.login(); st.stop()` (or IAP in front of Cloud Run).

navigation = st.navigation([
    st.Page(common.OVERVIEW, title="Overview", icon=":material/dashboard:",
            url_path="overview", default=True),
    st.Page(common.ENQUEUE, title="Enqueue", icon=":material/send:", url_path="enqueue"),
    st.Page(common.QUEUES, title="Queues", icon=":material/view_list:", url_path="queues"),
    st.Page(common.DIAGNOSTICS, title="Diagnostics", icon=":material/stethoscope:",
            url_path="diagnostics"),
])
# Settings come from the environment: a ConfigError stops here, shown with its fix, except
# on Diagnostics, which reads them leniently to report every setting that cannot work.
if navigation.url_path != "diagnostics":
    common.enqueuer()
navigation.run()
