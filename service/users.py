"""`service users`: MLflow's users and their permissions (MLFLOW_AUTH_MODE=mlflow), through its REST API as the admin.

Experiments and registered models are named as users know them; names are
resolved to what the API takes. The permission API changed in 3.13 (one
/api/3.0/mlflow/users/permissions/* family with a resource_type, instead of
per-experiment and per-model endpoints): generator/versions.py says which
one the pinned MLflow has.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from generator.errors import ServiceError, UserError
from generator.settings.validators import AUTH_PERMISSIONS
from generator.versions import MlflowVersion, auth_lists_users, auth_permissions_api_v3
from service.api import MlflowApi

API_V3 = "/api/3.0/mlflow"
KINDS = ("experiment", "model")
# What the 3.13+ API calls them.
RESOURCE_TYPES = {"experiment": "experiment", "model": "registered_model"}
PASSWORD_MINIMUM = 12  # MLflow 2.22+ refuses shorter; the same rule everywhere
GENERATED_PASSWORD_BYTES = 32


def generate_password() -> str:
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


def check_password(password: str) -> str:
    if len(password) < PASSWORD_MINIMUM or not password.isprintable():
        raise UserError(f"--password-stdin: the password must be one line of at least {PASSWORD_MINIMUM} printable "
                        "characters (MLflow 2.22 and later refuse shorter ones)")
    return password


def check_permission(permission: str) -> str:
    if permission not in AUTH_PERMISSIONS:
        raise UserError(f"PERMISSION: {permission!r} is not an MLflow permission; accepted: {', '.join(AUTH_PERMISSIONS)}")
    return permission


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UserError(f"KIND: {kind!r} is not something permissions are granted on; accepted: {', '.join(KINDS)}")
    return kind


@dataclass
class Target:
    kind: str
    name: str  # as the user named it
    resource_id: str  # what the API takes: an experiment's id, a model's name


@dataclass
class Users:
    api: MlflowApi
    version: MlflowVersion

    # -- JSON over the verbs the auth API uses ------------------------------
    def _call(self, method: str, path: str, body: dict | None = None, params: dict | None = None) -> dict:
        with self.api.open(method, path, body=body, params=params) as response:
            text = response.read().decode()
        import json

        return json.loads(text) if text.strip() else {}

    def _v2(self, method: str, endpoint: str, **body) -> dict:
        if method == "GET":
            return self._call(method, f"/api/2.0/mlflow/{endpoint}", params=body)
        return self._call(method, f"/api/2.0/mlflow/{endpoint}", body=body)

    # -- users ---------------------------------------------------------------
    def get(self, username: str) -> dict:
        found = self.api.optional("GET", "users/get", missing_statuses=(404, 400), username=username)
        if found is None:
            raise ServiceError(f"{username}: no such user; see `service users list`")
        return found["user"]

    def list(self) -> list[dict]:
        """Every user (3.10+: users/list); None tells the caller to read the auth database instead."""
        if not auth_lists_users(self.version):
            return None
        return sorted(self._v2("GET", "users/list").get("users", []), key=lambda user: user["username"])

    def add(self, username: str, password: str) -> None:
        self._v2("POST", "users/create", username=username, password=password)

    def remove(self, username: str) -> None:
        user = self.get(username)
        if not auth_permissions_api_v3(self.version):
            # Before 3.13 users/delete leaves the user's permission rows behind, which PostgreSQL refuses
            # (NotNullViolation on registered_model_permissions.user_id, seen on 2.9.2): remove them first.
            for grant in user.get("experiment_permissions", []):
                self._v2("DELETE", "experiments/permissions/delete", experiment_id=grant["experiment_id"],
                         username=username)
            for grant in user.get("registered_model_permissions", []):
                self._v2("DELETE", "registered-models/permissions/delete", name=grant["name"], username=username)
        self._v2("DELETE", "users/delete", username=username)

    def set_password(self, username: str, password: str) -> None:
        self.get(username)
        self._v2("PATCH", "users/update-password", username=username, password=password)

    def set_admin(self, username: str, is_admin: bool) -> None:
        self.get(username)
        self._v2("PATCH", "users/update-admin", username=username, is_admin=is_admin)

    # -- what permissions are about -------------------------------------------
    def target(self, kind: str, name: str) -> Target:
        if kind == "experiment":
            found = self.api.optional("GET", "experiments/get-by-name", missing_statuses=(404,), experiment_name=name)
            if found is None:
                raise ServiceError(f"experiment {name!r}: no such experiment; see `service experiments`")
            return Target(kind, name, found["experiment"]["experiment_id"])
        found = self.api.optional("GET", "registered-models/get", missing_statuses=(404,), name=name)
        if found is None:
            raise ServiceError(f"model {name!r}: no such registered model; see `service models`")
        return Target(kind, name, found["registered_model"]["name"])

    def grant(self, username: str, target: Target, permission: str) -> str:
        """'granted' or 'updated' (the user had another permission there)."""
        self.get(username)
        if auth_permissions_api_v3(self.version):
            held = {(row["kind"], row["id"]) for row in self.permissions(username, names=False)}
            outcome = "granted"
            if (target.kind, target.resource_id) in held:
                # grant refuses a resource the user already has a permission on: replace it.
                self.revoke(username, target)
                outcome = "updated"
            self._call("POST", f"{API_V3}/users/permissions/grant", body={
                "username": username, "resource_type": RESOURCE_TYPES[target.kind],
                "resource_id": target.resource_id, "permission": permission})
            return outcome
        endpoint, key = self._v2_resource(target)
        current = self._v2_permission(username, target)
        if current is None:
            self._v2("POST", f"{endpoint}/create", **{key: target.resource_id}, username=username, permission=permission)
            return "granted"
        self._v2("PATCH", f"{endpoint}/update", **{key: target.resource_id}, username=username, permission=permission)
        return "updated"

    def revoke(self, username: str, target: Target) -> None:
        self.get(username)
        if auth_permissions_api_v3(self.version):
            self._call("POST", f"{API_V3}/users/permissions/revoke", body={
                "username": username, "resource_type": RESOURCE_TYPES[target.kind], "resource_id": target.resource_id})
            return
        if self._v2_permission(username, target) is None:
            raise ServiceError(f"{username} has no permission of its own on {target.kind} {target.name!r}")
        endpoint, key = self._v2_resource(target)
        self._v2("DELETE", f"{endpoint}/delete", **{key: target.resource_id}, username=username)

    def permissions(self, username: str, names: bool = True) -> list[dict]:
        """The user's own grants: [{kind, target, permission}] (target: experiment name, or model name)."""
        user = self.get(username)
        rows = []
        if auth_permissions_api_v3(self.version):
            listed = self._call("GET", f"{API_V3}/users/permissions/list", params={"username": username})
            kinds = {value: key for key, value in RESOURCE_TYPES.items()}
            for row in listed.get("permissions", []):
                kind = kinds.get(row["resource_type"])
                if kind is not None:
                    rows.append({"kind": kind, "id": row["resource_pattern"], "permission": row["permission"]})
        else:
            rows += [{"kind": "experiment", "id": p["experiment_id"], "permission": p["permission"]}
                     for p in user.get("experiment_permissions", [])]
            rows += [{"kind": "model", "id": p["name"], "permission": p["permission"]}
                     for p in user.get("registered_model_permissions", [])]
        if not names:
            return rows
        for row in rows:
            row["target"] = self._experiment_name(row["id"]) if row["kind"] == "experiment" else row["id"]
        return sorted(rows, key=lambda row: (row["kind"], row["target"]))

    def _experiment_name(self, experiment_id: str) -> str:
        found = self.api.optional("GET", "experiments/get", missing_statuses=(404, 400), experiment_id=experiment_id)
        return found["experiment"]["name"] if found else f"(id {experiment_id})"

    @staticmethod
    def _v2_resource(target: Target) -> tuple[str, str]:
        if target.kind == "experiment":
            return "experiments/permissions", "experiment_id"
        return "registered-models/permissions", "name"

    def _v2_permission(self, username: str, target: Target) -> str | None:
        endpoint, key = self._v2_resource(target)
        found = self.api.optional("GET", f"{endpoint}/get", missing_statuses=(404, 400),
                                  **{key: target.resource_id}, username=username)
        if found is None:
            return None
        return (found.get("experiment_permission") or found.get("registered_model_permission") or {}).get("permission")
