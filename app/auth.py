"""Who is signed in. Interface used by every page; Entra ID (MSAL) sign-in fills it, local mode is bannered.

Pages call ``require_login()`` at the top and ``user.is_operator`` before anything that changes a device;
the frame calls ``account_area(user)`` to show the signed-in name and Sign out in the sidebar.

Without Entra settings (``THERMOLOG_ENTRA_CLIENT_ID`` plus a tenant or authority) the app runs in local mode:
everyone is the local user with both roles, a banner says so, and ``check_bind`` keeps the server on 127.0.0.1.
The MSAL flow itself lives in ``app.auth_flow``; users and roles in ``app.roles``.
"""

from __future__ import annotations

import html

import streamlit as st

from app.auth_flow import LoginError, finish_login, is_callback, is_configured, logout_url, pending_flows, start_login
from app.roles import LOCAL_USER, User
from thermolog.settings import Settings, get_settings

USER_KEY = "thermolog.user"
LOGIN_STATE_KEY = "thermolog.login_state"  # state of the sign-in this session started (to reuse its link)
LOGIN_ERROR_KEY = "thermolog.login_error"
SIGNED_OUT_KEY = "thermolog.signed_out"

LOOPBACK_HOST = "127.0.0.1"
LOCAL_BANNER = "local mode: no sign-in, bound to 127.0.0.1 only"
SIGN_IN_LABEL = "Sign in with Microsoft"


class InsecureBind(RuntimeError):
    """The app was asked to listen beyond loopback without sign-in configured."""


def sign_in_configured(settings: Settings | None = None) -> bool:
    """True when Entra ID sign-in is set up; False means local mode."""
    return is_configured(settings or get_settings())


def check_bind(host: str, settings: Settings | None = None) -> None:
    """Refuse (InsecureBind) to serve on anything but 127.0.0.1 in local mode, unless the insecure flag is set."""
    settings = settings or get_settings()
    if host == LOOPBACK_HOST or sign_in_configured(settings) or settings.app_allow_insecure_bind:
        return
    raise InsecureBind(
        f"refusing to bind the dashboard to {host}: without sign-in anyone who reaches it may send setpoints. "
        "Configure THERMOLOG_ENTRA_CLIENT_ID, THERMOLOG_ENTRA_CLIENT_SECRET and THERMOLOG_ENTRA_TENANT_ID "
        f"(or THERMOLOG_ENTRA_AUTHORITY), bind to {LOOPBACK_HOST}, or set THERMOLOG_APP_ALLOW_INSECURE_BIND=true."
    )


def current_user() -> User | None:
    """The user of this Streamlit session, or None when nobody is signed in."""
    return st.session_state.get(USER_KEY)


def require_login() -> User:
    """Return the signed-in user, completing a returning sign-in; otherwise show the sign-in page and stop.

    In local mode (no Entra settings) this is the local user, under a banner that says so.
    """
    settings = get_settings()
    if not sign_in_configured(settings):
        st.session_state[USER_KEY] = LOCAL_USER
        st.warning(LOCAL_BANNER, icon=":material/lock_open:")
        return LOCAL_USER
    user = current_user()
    if user is None or user.local:
        user = _complete_sign_in(settings)
    if user is None:
        _show_sign_in(settings)
        st.stop()
    if not user.is_viewer:
        st.error(f"{user.name} ({user.username}) has no thermolog role. Ask an administrator to assign "
                 f"{settings.entra_role_viewer} or {settings.entra_role_operator}.")
        account_area(user)
        st.stop()
    return user


def _complete_sign_in(settings: Settings) -> User | None:
    """If the browser has just come back from the identity provider, redeem the code (once) and clear the URL."""
    params = st.query_params.to_dict()
    if not is_callback(params):
        return None
    st.query_params.clear()  # the code is single-use; never leave it in the address bar
    try:
        user = finish_login(params, settings)
    except LoginError as exc:
        st.session_state[LOGIN_ERROR_KEY] = str(exc)
        return None
    st.session_state.pop(LOGIN_ERROR_KEY, None)
    st.session_state.pop(LOGIN_STATE_KEY, None)
    st.session_state[USER_KEY] = user
    return user


def login_url(settings: Settings | None = None) -> str:
    """The identity provider's sign-in URL for this session (a pending flow is reused while it is fresh)."""
    settings = settings or get_settings()
    state = st.session_state.get(LOGIN_STATE_KEY)
    flow = pending_flows(settings).peek(state) if state else None
    if flow is None:
        flow = start_login(settings)
        st.session_state[LOGIN_STATE_KEY] = flow["state"]
    return flow["auth_uri"]


def _show_sign_in(settings: Settings) -> None:
    """The page anyone not signed in sees: why, any error of the last attempt, and the sign-in button."""
    st.title("thermolog")
    if st.session_state.get(SIGNED_OUT_KEY):
        st.success("You are signed out.")
        provider_logout = logout_url(settings)
        if provider_logout:
            st.markdown(f"[Sign out of your Microsoft account as well]({provider_logout})")
    error = st.session_state.get(LOGIN_ERROR_KEY)
    if error:
        st.error(error)
    st.write("Sign in with your organisation account to see and control the thermostats.")
    try:
        url = html.escape(login_url(settings), quote=True)
    except LoginError as exc:
        st.error(str(exc), icon=":material/cloud_off:")
        return
    # A plain link in this tab: st.link_button would open the identity provider in a new tab.
    st.markdown(
        f'<a href="{url}" target="_self" class="thermolog-sign-in" style="display:inline-block;padding:0.5em 1em;'
        f'border-radius:0.5em;background:#2f6fde;color:white;text-decoration:none">{SIGN_IN_LABEL}</a>',
        unsafe_allow_html=True,
    )


def logout() -> None:
    """Forget everything this session knows (user, pending sign-in, page state); the sign-in page follows."""
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state[SIGNED_OUT_KEY] = True


def account_area(user: User) -> None:
    """The sidebar's account box: who is signed in, with which roles, and Sign out."""
    with st.sidebar:
        st.markdown(f"**{user.name}**")
        if user.local:
            st.caption("local mode · no sign-in")
            return
        roles = ", ".join(sorted(role.split(".")[-1] for role in user.roles)) or "no role"
        st.caption(f"{user.username} · {roles}")
        if st.button("Sign out", key="thermolog.sign_out"):
            logout()
            st.rerun()
