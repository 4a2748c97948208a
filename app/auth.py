"""Who is signed in. Interface used by every page; Entra ID (MSAL) sign-in fills it, local mode is bannered.

Pages call ``require_login()`` at the top and ``confirm_roles()`` right before anything that changes a device;
the frame calls ``account_area(user)`` to show the signed-in name and Sign out in the sidebar.

A sign-in is a server-side session (``app.sessions``) named by an HttpOnly cookie that ``app.auth_routes`` sets
after the identity provider's answer, so reloads and new tabs stay signed in until ``entra_session_ttl_s``. Roles
are asked again every ``entra_role_recheck_s`` and before every command; Sign out ends the session everywhere.

Without Entra settings (``THERMOLOG_ENTRA_CLIENT_ID`` plus a tenant or authority) the app runs in local mode:
everyone is the local user with both roles, a banner says so, and both ``check_bind`` (launcher) and
``require_login`` (every page run) insist on a loopback address and a loopback Host header.
The MSAL flow itself lives in ``app.auth_flow``; users and roles in ``app.roles``.
"""

from __future__ import annotations

import html
import logging

import streamlit as st

from app import auth_flow
from app.auth_flow import LoginError, ProviderUnavailable, is_configured, is_loopback_host, provider, provider_name
from app.auth_routes import SIGN_IN_PATH
from app.plain_text import plain
from app.roles import LOCAL_USER, User
from app.sessions import NOTICE_COOKIE, SESSION_COOKIE, Session, SessionStore, decode_notice, session_store
from thermolog.settings import Settings, get_settings

log = logging.getLogger(__name__)

USER_KEY = "thermolog.user"
SIGNED_OUT_KEY = "thermolog.signed_out"  # the provider's sign-out link, after Sign out in this tab
ENDED_KEY = "thermolog.session_ended"  # why the sign-in ended (roles re-check refused)

LOOPBACK_HOST = "127.0.0.1"
LOCAL_BANNER = "local mode: no sign-in, bound to 127.0.0.1 only"
INSECURE_BANNER = ("local mode: no sign-in, and THERMOLOG_APP_ALLOW_INSECURE_BIND lets this server answer on "
                   "{address}: anyone who reaches it may send setpoints")
SIGN_IN_LABEL = "Sign in with {provider}"


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


# --- what the browser sent (one place, so tests can stand in for a browser) ------------------------------
def request_cookie(name: str) -> str | None:
    """A cookie of the request that opened this Streamlit session (HttpOnly ones included)."""
    value = st.context.cookies.get(name)
    return value if isinstance(value, str) else None  # AppTest has no request and answers with a stand-in


def request_host() -> str | None:
    """The Host header of the request that opened this session; None outside a real server (AppTest)."""
    return st.context.headers.get("Host")


def served_address() -> str | None:
    """The address Streamlit listens on ('': all interfaces); None when no HTTP request opened this session
    (AppTest), so there is no server to check."""
    if not st.context.headers:
        return None
    return st.get_option("server.address") or ""


def local_mode_problem(settings: Settings) -> str | None:
    """Why local mode must not serve this request (address or Host beyond loopback), or None."""
    if settings.app_allow_insecure_bind:
        return None
    address = served_address()
    if address is not None and address != LOOPBACK_HOST:
        return (f"This dashboard has no sign-in and listens on {address or 'every address'}, so anyone who reaches "
                f"it could send setpoints. Start it with `thermolog app` (it binds {LOOPBACK_HOST}), or configure "
                "sign-in (THERMOLOG_ENTRA_*).")
    host = request_host()
    if host is not None and not is_loopback_host(host):
        log.warning("event=request_refused reason=host host=%s", plain(host, 100))
        return ("This dashboard has no sign-in and answers only at 127.0.0.1 or localhost, not "
                f"{plain(host, 100)}: open http://127.0.0.1:{settings.app_port}/.")
    return None


def local_banner(settings: Settings) -> str:
    """The local-mode banner, true to what the server answers on."""
    address = served_address()
    if settings.app_allow_insecure_bind and address != LOOPBACK_HOST:
        return INSECURE_BANNER.format(address=address or "every address")
    return LOCAL_BANNER


# --- the gate ------------------------------------------------------------------------------------------------
def require_login() -> User:
    """Return the signed-in user of this browser; otherwise show the sign-in page and stop.

    In local mode (no Entra settings) this is the local user, under a banner that says so, and only on a
    loopback address and Host.
    """
    settings = get_settings()
    if not sign_in_configured(settings):
        problem = local_mode_problem(settings)
        if problem:
            st.error(problem, icon=":material/gpp_bad:")
            st.stop()
        st.session_state[USER_KEY] = LOCAL_USER
        st.warning(local_banner(settings), icon=":material/lock_open:")
        return LOCAL_USER
    session = _session(settings)
    if session is not None:
        session = _rechecked(session, settings, force=False)
    if session is None:
        st.session_state.pop(USER_KEY, None)
        _show_sign_in(settings)
        st.stop()
    user = session.sign_in.user
    st.session_state[USER_KEY] = user
    if not user.is_viewer:
        st.error(f"{plain(user.name)} ({plain(user.username)}) has no thermolog role. Ask an administrator to "
                 f"assign {settings.entra_role_viewer} or {settings.entra_role_operator}.")
        account_area(user)
        st.stop()
    return user


def confirm_roles() -> User | None:
    """Ask the identity provider for the user's roles now (before a command); None, with an error shown, when the
    sign-in has ended or the provider cannot be asked. Local mode: the local user."""
    settings = get_settings()
    if not sign_in_configured(settings):
        return LOCAL_USER if local_mode_problem(settings) is None else None
    session = _session(settings)
    if session is not None:
        session = _rechecked(session, settings, force=True)
    if session is None:
        st.session_state.pop(USER_KEY, None)
        st.error(st.session_state.get(ENDED_KEY) or "Your sign-in has ended; reload the page and sign in again.")
        return None
    st.session_state[USER_KEY] = session.sign_in.user
    return session.sign_in.user


def operator_confirmed(action: str = "Not sent") -> bool:
    """Before any change (a command, a schedule, an alert action): whether the identity provider still grants the
    operator role now; when it does not, the refusal is shown (``action`` starts the message)."""
    confirmed = confirm_roles()  # roles as the identity provider sees them now, not at sign-in
    if confirmed is not None and not confirmed.is_operator:
        st.error(f"{action}: your operator role has been removed. Reload the page.", icon=":material/lock:")
    return confirmed is not None and confirmed.is_operator


def _store(settings: Settings) -> SessionStore:
    return session_store(settings.entra_session_ttl_s)


def _session(settings: Settings) -> Session | None:
    """The live session this browser's cookie names, if any."""
    return _store(settings).get(request_cookie(SESSION_COOKIE))


def _rechecked(session: Session, settings: Settings, force: bool) -> Session | None:
    """The session after a role re-check when one is due (or forced); None when the provider refused it."""
    store = _store(settings)
    if not force and not store.due(session, settings.entra_role_recheck_s):
        return session
    try:
        fresh = auth_flow.refresh(session.sign_in, settings)
    except ProviderUnavailable as exc:
        log.warning("event=role_check_unavailable user=%s error=%s", session.sign_in.user.username, exc)
        if force:
            st.session_state[ENDED_KEY] = f"Roles could not be confirmed, so nothing was sent: {exc}"
            return None
        return session  # keep looking; the next run asks again, and every command asks first
    except LoginError as exc:
        store.revoke(session.id)
        log.info("event=session_ended user=%s reason=%s", session.sign_in.user.username, plain(str(exc)))
        st.session_state[ENDED_KEY] = f"Your sign-in has ended: {exc}"
        return None
    return store.update(session, fresh)


def _show_sign_in(settings: Settings) -> None:
    """The page anyone not signed in sees: why, any error of the last attempt, and the sign-in button."""
    st.title("thermolog")
    signed_out = st.session_state.get(SIGNED_OUT_KEY)
    if signed_out is not None:
        st.success("You are signed out.")
        if signed_out:
            st.markdown(f"[Sign out at {plain(provider_name(settings))} as well]({signed_out})")
    for message in (st.session_state.pop(ENDED_KEY, None), decode_notice(request_cookie(NOTICE_COOKIE))):
        if message:
            st.error(plain(message), icon=":material/error:")
    st.write("Sign in with your organisation account to see and control the thermostats.")
    try:
        auth_flow.redirect_uri(settings)  # misconfiguration is explained here, not after the click
        provider(settings)
    except LoginError as exc:
        st.error(plain(exc), icon=":material/cloud_off:")
        return
    # A plain link in this tab (st.link_button would open a new tab) to the route that sets the binding cookie.
    label = html.escape(SIGN_IN_LABEL.format(provider=provider_name(settings)))  # inside HTML: entities
    st.markdown(
        f'<a href="{SIGN_IN_PATH}" target="_self" class="thermolog-sign-in" style="display:inline-block;'
        f'padding:0.5em 1em;border-radius:0.5em;background:#2f6fde;color:white;text-decoration:none">{label}</a>',
        unsafe_allow_html=True,
    )


def logout() -> None:
    """End this browser's sign-in everywhere (every tab), forget the page state; the sign-in page follows with a
    link that also ends the session at the identity provider (``id_token_hint``), when it has such an endpoint."""
    settings = get_settings()
    session = _session(settings)
    provider_logout = ""
    if session is not None:
        _store(settings).revoke(session.id)
        log.info("event=sign_out user=%s", session.sign_in.user.username)
        provider_logout = auth_flow.logout_url(settings, session.sign_in.id_token)
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    st.session_state[SIGNED_OUT_KEY] = provider_logout


def account_area(user: User) -> None:
    """The sidebar's account box: who is signed in, with which roles, and Sign out."""
    with st.sidebar:
        st.markdown(f"**{plain(user.name)}**")
        if user.local:
            st.caption("local mode · no sign-in")
            return
        roles = ", ".join(sorted(role.split(".")[-1] for role in user.roles)) or "no role"
        st.caption(f"{plain(user.username)} · {roles}")
        if st.button("Sign out", key="thermolog.sign_out"):
            logout()
            st.rerun()
