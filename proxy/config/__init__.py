"""Configuration: YAML in, typed immutable objects out.

``load.load_config(path)`` reads the file (the only YAML reader) and ``parse.parse_config``
turns the document into a ``Config``: ``${VAR}`` interpolated, validated (unknown keys are
errors), checked across routes. The result holds no dict or list: mappings from the file
become tuples of typed pairs, so the model is hashable and comparable (a reload compares
old and new settings). Problems are reported all at once in a ``ConfigError``: one line
each, in file order, starting with the key path.

The modules, bottom up: ``errors``, ``fields`` (the strict base model and field parsers),
``interpolate``, ``upstream``, ``auth`` (one model per auth type), ``store`` (the session
store), ``clients`` (``client_auth``: clients and their scopes), ``model`` (the file's
shape), ``problems`` (pydantic's errors in plain words), ``parse``, ``load``. This package
re-exports the public names, so ``from proxy.config import Config`` is the usual import.
"""

from proxy.config.auth import (
    AUTH_MODELS,
    AUTH_TYPES,
    SESSION_TUNING_KEYS,
    AuthConfig,
    ClientCredentials,
    IdmcJwtAuth,
    IicsOAuthAuth,
    IicsPasswordAuth,
    IicsPasswordV3Auth,
    IicsSalesforceAuth,
    IicsSamlAuth,
    IvantiApiKeyAuth,
    IvantiSessionAuth,
    SalesforceLogin,
    SessionTuning,
)
from proxy.config.clients import (
    FULL_ACCESS,
    CertificateClient,
    ClientAuth,
    ClientIdentity,
    ClientScope,
    Rate,
    TokenClient,
    normalise_subject,
)
from proxy.config.errors import ConfigError, key_path
from proxy.config.model import (
    Config,
    ForwardProxy,
    ForwardProxyCA,
    Header,
    Listen,
    ListenMatch,
    ListenTLS,
    LogSettings,
    Match,
    Route,
)
from proxy.config.parse import default_config_path, parse_config
from proxy.config.store import SessionStore
from proxy.config.upstream import HostPort, ResolveRule, UpstreamOverride, UpstreamSettings

__all__ = [
    "AUTH_MODELS",
    "AUTH_TYPES",
    "FULL_ACCESS",
    "SESSION_TUNING_KEYS",
    "AuthConfig",
    "CertificateClient",
    "ClientAuth",
    "ClientCredentials",
    "ClientIdentity",
    "ClientScope",
    "Config",
    "ConfigError",
    "ForwardProxy",
    "ForwardProxyCA",
    "Header",
    "HostPort",
    "IdmcJwtAuth",
    "IicsOAuthAuth",
    "IicsPasswordAuth",
    "IicsPasswordV3Auth",
    "IicsSalesforceAuth",
    "IicsSamlAuth",
    "IvantiApiKeyAuth",
    "IvantiSessionAuth",
    "Listen",
    "ListenMatch",
    "ListenTLS",
    "LogSettings",
    "Match",
    "Rate",
    "ResolveRule",
    "Route",
    "SalesforceLogin",
    "SessionStore",
    "SessionTuning",
    "TokenClient",
    "UpstreamOverride",
    "UpstreamSettings",
    "default_config_path",
    "key_path",
    "normalise_subject",
    "parse_config",
]
