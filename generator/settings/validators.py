"""The rules a setting's text must follow: each parser raises a message naming the rule and what is accepted.

Rule messages never embed the value: loading appends it only when it may be shown.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, Callable, NamedTuple

from cronsim import CronSim, CronSimError
from pydantic import BeforeValidator, SecretStr
from pydantic_core import PydanticCustomError

from generator.versions import MlflowVersion, parse_version


def rule_error(rule: str) -> PydanticCustomError:
    return PydanticCustomError("rule", rule)


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise rule_error("must be a boolean; accepted: true, false, yes, no, 1, 0")


def integer_between(low: int, high: int, what: str) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        text = str(value).strip()
        if not re.fullmatch(r"[0-9]+", text) or not low <= int(text) <= high:
            raise rule_error(f"must be {what}; accepted: a whole number from {low} to {high}")
        return int(text)

    return parse


def matching(pattern: str, rule: str) -> Callable[[Any], str]:
    compiled = re.compile(pattern)

    def parse(value: Any) -> str:
        text = str(value).strip()
        if not compiled.fullmatch(text):
            raise rule_error(rule)
        return text

    return parse


LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOSTNAME = rf"{LABEL}(?:\.{LABEL})*"


def bucket_name(value: Any) -> str:
    text = str(value).strip()
    accepted = (
        "must follow the S3 bucket naming rules; accepted: 3-63 characters of lowercase letters, "
        "digits, '.' and '-', starting and ending with a letter or digit, no '..', not an IP address"
    )
    if (
        not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", text)
        or ".." in text
        or ".-" in text
        or "-." in text
        or text.startswith(("xn--", "sthree-"))
        or text.endswith(("-s3alias", "--ol-s3"))
    ):
        raise rule_error(accepted)
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return text
    raise rule_error(accepted)


_RESERVED_DATABASES = {"postgres", "template0", "template1"}
_RESERVED_ROLES = {"postgres", "public", "none", "current_user", "session_user", "current_role"}


def database_name(value: Any) -> str:
    text = identifier(value)
    if text in _RESERVED_DATABASES:
        raise rule_error(f"must not be a PostgreSQL system database ({', '.join(sorted(_RESERVED_DATABASES))})")
    return text


def role_name(value: Any) -> str:
    text = identifier(value)
    if text in _RESERVED_ROLES or text.startswith("pg_"):
        raise rule_error("must not be a reserved PostgreSQL role name (postgres, public, pg_*)")
    return text


identifier = matching(
    r"[a-z_][a-z0-9_]{0,62}",
    "must be a safe PostgreSQL identifier; accepted: 1-63 characters of lowercase letters, "
    "digits and '_', not starting with a digit",
)


def cron(value: Any) -> str:
    text = " ".join(str(value).split())
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as error:
        raise rule_error(
            f"must be a cron expression ({error}); accepted: five fields 'minute hour day month weekday', "
            "for example '0 3 * * 0'"
        ) from None
    return text


def mlflow_version(value: Any) -> MlflowVersion:
    version = parse_version(str(value).strip())
    if version is None:
        raise rule_error("must be an MLflow release number; accepted: MAJOR.MINOR.PATCH such as 2.9.2 or 3.1.0")
    return version


def password(minimum: int) -> Callable[[Any], SecretStr | None]:
    def parse(value: Any) -> SecretStr | None:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is None or value == "":
            return None
        if not value.isprintable():
            raise rule_error("must contain printable characters only (no tabs, newlines or control characters)")
        if len(value) < minimum:
            raise rule_error(f"is too short; accepted: at least {minimum} characters")
        return SecretStr(value)

    return parse


# RFC 3986's unreserved characters: a password made of them needs no encoding
# inside a connection URL (the GraphQL role's, which Compose substitutes).
URL_SAFE_PASSWORD = r"[A-Za-z0-9._~-]+"


def url_safe_password(minimum: int) -> Callable[[Any], SecretStr | None]:
    check_length = password(minimum)

    def parse(value: Any) -> SecretStr | None:
        secret = check_length(value)
        if secret is not None and not re.fullmatch(URL_SAFE_PASSWORD, secret.get_secret_value()):
            raise rule_error(
                "must be usable inside a connection URL as written (Hasura reads it from one); accepted: letters, "
                "digits and '-', '.', '_', '~' only"
            )
        return secret

    return parse


def hasura_role(value: Any) -> str:
    text = matching(
        r"[A-Za-z][A-Za-z0-9_-]{0,62}",
        "must be a Hasura role name; accepted: 1-63 letters, digits, '_' or '-', starting with a letter",
    )(value)
    if text == "admin":
        raise rule_error("must not be admin, which Hasura lets read everything already; accepted: another role name")
    return text


def networks(value: Any) -> tuple[str, ...]:
    entries = [entry for entry in re.split(r"[,\s]+", str(value).strip()) if entry]
    networks = []
    for entry in entries:
        try:
            networks.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise rule_error(
                "each entry must be an IP address or CIDR; accepted: a comma-separated list such as "
                "'10.0.0.0/8, 192.168.1.7'"
            ) from None
    return tuple(networks)


def positive_number(maximum: float, what: str) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        text = str(value).strip()
        try:
            number = float(text)
        except ValueError:
            number = -1.0
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) or not 0 < number <= maximum:
            raise rule_error(f"must be {what}; accepted: a number greater than 0 and at most {maximum:g}")
        return number

    return parse


def nginx_version(value: Any) -> tuple[int, int, int]:
    text = str(value).strip()
    match = re.fullmatch(r"([0-9]+)\.([0-9]+)(?:\.([0-9]+))?", text)
    if not match:
        raise rule_error("must be an nginx version; accepted: MAJOR.MINOR or MAJOR.MINOR.PATCH such as 1.27 or 1.22.1")
    return (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))


# (lowest, highest, default) rounds. nginx checks the hash on every request, so
# the default is the cheapest crypt(3) allows: safe for generated passwords.
HASH_SCHEMES = {"sha512_crypt": (1000, 999_999_999, 1000), "sha256_crypt": (1000, 999_999_999, 1000), "bcrypt": (4, 31, 10)}
SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def hash_scheme(value: Any) -> str:
    text = str(value).strip()
    if text not in HASH_SCHEMES:
        raise rule_error(f"must be a password hash scheme; accepted: {', '.join(HASH_SCHEMES)}")
    return text


AUTH_MODES = ("nginx", "mlflow")
# MLflow's permission names (mlflow.server.auth.permissions), the same on every supported version.
AUTH_PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")


def auth_mode(value: Any) -> str:
    text = str(value).strip()
    if text not in AUTH_MODES:
        raise rule_error(f"must be an auth mode; accepted: {', '.join(AUTH_MODES)}")
    return text


def auth_permission(value: Any) -> str:
    text = str(value).strip()
    if text not in AUTH_PERMISSIONS:
        raise rule_error(f"must be an MLflow permission; accepted: {', '.join(AUTH_PERMISSIONS)}")
    return text


def salt(value: Any) -> str | None:
    text = str(value).strip()
    if not text:
        return None
    # 22 characters fit bcrypt, whose last salt character carries 2 bits only.
    if not re.fullmatch(r"[./0-9A-Za-z]{21}[.Oeu]", text):
        raise rule_error("must be a salt as the build generates it; accepted: 22 characters of ./0-9A-Za-z, or empty")
    return text


Boolean = Annotated[bool, BeforeValidator(boolean)]
Port = Annotated[int, BeforeValidator(integer_between(1, 65535, "a TCP port number"))]
Password = Annotated[SecretStr | None, BeforeValidator(password(8))]
Hostname = Annotated[
    str,
    BeforeValidator(
        matching(HOSTNAME, "must be a DNS name; accepted: lowercase labels of letters, digits and '-' joined by '.'")
    ),
]


# -- model serving -------------------------------------------------------------------

# MLflow's registry stages a reference may name (the seed's stage API).
MODEL_STAGES = ("Staging", "Production", "Archived")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MODEL_ALIAS = re.compile(r"[A-Za-z0-9_-]{1,64}")
# The service is mlflow-serve-<slug>: a DNS label of at most 63 characters.
SLUG_MAX = 63 - len("mlflow-serve-")


class ModelReference(NamedTuple):
    """A registered model as MLFLOW_SERVE_MODELS names it: NAME@ALIAS, NAME/STAGE or NAME/VERSION."""

    name: str
    kind: str  # "alias", "stage" or "version"
    target: str  # the alias, the stage (canonical case) or the version number

    @property
    def text(self) -> str:
        return f"{self.name}@{self.target}" if self.kind == "alias" else f"{self.name}/{self.target}"

    @property
    def uri(self) -> str:
        return f"models:/{self.text}"

    @property
    def slug(self) -> str:
        suffix = {"alias": self.target, "stage": self.target, "version": f"v{self.target}"}[self.kind]
        return f"{_dns_words(self.name)}-{_dns_words(suffix)}"


def _dns_words(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


_REFERENCE_FORMS = (
    "accepted: NAME@ALIAS (production-classifier@champion), NAME/STAGE "
    f"({', '.join(MODEL_STAGES)}: churn/Production) or NAME/VERSION (churn/3), comma-separated"
)


def model_reference(text: str) -> ModelReference:
    if "@" in text:
        name, _, target = text.partition("@")
        kind = "alias"
        if not MODEL_ALIAS.fullmatch(target):
            raise rule_error(f"{text!r} has no valid alias after '@' (letters, digits, '_' and '-'); {_REFERENCE_FORMS}")
    elif "/" in text:
        name, _, target = text.partition("/")
        if target.isdigit() and int(target) > 0:
            kind, target = "version", str(int(target))
        elif target.lower() in (stage.lower() for stage in MODEL_STAGES):
            kind, target = "stage", next(stage for stage in MODEL_STAGES if stage.lower() == target.lower())
        else:
            raise rule_error(f"{text!r} names neither a stage nor a version number after '/'; {_REFERENCE_FORMS}")
    else:
        raise rule_error(f"{text!r} is not a model reference; {_REFERENCE_FORMS}")
    if not name:
        raise rule_error(f"{text!r} has an empty model name; {_REFERENCE_FORMS}")
    if not MODEL_NAME.fullmatch(name):
        raise rule_error(
            f"{text!r}: the model name must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    reference = ModelReference(name, kind, target)
    if len(reference.slug) > SLUG_MAX:
        raise rule_error(f"{text!r} gives the service name mlflow-serve-{reference.slug}, longer than a DNS label "
                         f"allows; accepted: a reference whose slug has at most {SLUG_MAX} characters")
    return reference


def model_references(value: Any) -> tuple[ModelReference, ...]:
    text = str(value).strip()
    if not text:
        return ()
    references: list[ModelReference] = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            raise rule_error(f"has an empty entry between commas; {_REFERENCE_FORMS}")
        reference = model_reference(entry)
        for earlier in references:
            if earlier.slug == reference.slug:
                raise rule_error(f"{earlier.text!r} and {reference.text!r} both give the service mlflow-serve-"
                                 f"{reference.slug}; accepted: references with distinct slugs")
        references.append(reference)
    return tuple(references)


_PINNED_REQUIREMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9._,-]+\])?==[A-Za-z0-9][A-Za-z0-9.!+_-]*")


def pinned_requirements(value: Any) -> tuple[str, ...]:
    entries = [entry for entry in re.split(r"[,\s]+", str(value).strip()) if entry]
    for entry in entries:
        if not _PINNED_REQUIREMENT.fullmatch(entry):
            raise rule_error(
                f"{entry!r} is not a pinned requirement; accepted: NAME==VERSION entries, comma-separated, "
                "such as 'scikit-learn==1.5.2, pandas==2.2.3'"
            )
    return tuple(entries)
