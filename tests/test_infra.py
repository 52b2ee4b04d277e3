"""Offline checks of infra/ (issue #5): the Bicep parses, is secure by default, provisions every
app setting the code reads (and nothing it does not), passes checkov, and builds where a Bicep
CLI exists.

No Azure and no network: pycep-parser (requirements-dev.txt) gives the syntax tree of each .bicep
file; checkov runs from .venv-tools/ (scripts/install-infra-tools). Values are compared as Bicep
expressions rendered back to text (`storage.outputs.tableEndpoint`), followed through module
parameters and outputs to where they come from.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from pathspec import GitIgnoreSpec
from pycep import BicepParser

from shared.urls import Urls

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
SETTINGS_PY = ROOT / "shared" / "settings.py"
DEPLOYED_CODE = [ROOT / "function_app.py", *sorted((ROOT / "shared").rglob("*.py"))]
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Settings the code reads that must NOT be provisioned in Azure, each with its reason.
LOCAL_ONLY = {
    # Azurite's well-known connection string (it carries an account key). In Azure the gateway
    # reaches the tables through GATEWAY_TABLES_ENDPOINT with its managed identity.
    "GATEWAY_TABLES_CONNECTION_STRING": "local Azurite only",
    # CA bundle of the local Key Vault emulator's self-signed certificate; the real vault's
    # certificate chains to a public CA.
    "KEY_VAULT_CA_BUNDLE": "local Key Vault emulator only",
    # Plain-http loopback EHRs and IdPs: the local stack's own; never allowed in Azure.
    "GATEWAY_ALLOW_LOOPBACK_HTTP": "local development only",
    # Spans and metrics to the console or an OTLP collector on the developer's machine; in Azure
    # they go to Application Insights (APPLICATIONINSIGHTS_CONNECTION_STRING).
    "GATEWAY_TRACES": "local development only",
}

# Settings in local.settings.json.sample that are neither read by shared/settings.py nor
# provisioned as written, each with its reason.
LOCAL_SAMPLE_ONLY = {
    # Core Tools needs it locally; on Flex Consumption the runtime is functionAppConfig.runtime
    # (the setting is rejected there), on Elastic Premium it is provisioned with the plan settings.
    "FUNCTIONS_WORKER_RUNTIME": "local Core Tools; runtime is functionAppConfig in Azure",
    # Local: UseDevelopmentStorage=true (Azurite). Azure: the identity-based
    # AzureWebJobsStorage__accountName/__credential/__clientId, never a connection string.
    "AzureWebJobsStorage": "local Azurite; identity-based AzureWebJobsStorage__* in Azure",
    # Set by the platform in Azure (the managed identity endpoint); the local stack points them
    # at its identity emulator.
    "IDENTITY_ENDPOINT": "set by the platform",
    "IDENTITY_HEADER": "set by the platform",
}

# Provisioned settings the code in this repo does not read, each with who reads it and why.
PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__accountName": "Functions host storage, identity-based connection",
    "AzureWebJobsStorage__credential": "Functions host storage: managedidentity",
    "AzureWebJobsStorage__clientId": "Functions host storage: which user-assigned identity",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "Functions host telemetry destination",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Functions host telemetry with Entra ID auth",
    "AZURE_CLIENT_ID": "azure-identity DefaultAzureCredential: the user-assigned identity",
    "PYTHON_ENABLE_INIT_INDEXING": "Python worker: HTTP streams for the FastAPI-typed functions (docs/streaming.md)",
    "FUNCTIONS_EXTENSION_VERSION": "Elastic Premium only: Functions runtime ~4",
    "FUNCTIONS_WORKER_RUNTIME": "Elastic Premium only: python worker",
    "WEBSITE_RUN_FROM_PACKAGE": "Elastic Premium only: package blob URL (no Azure Files)",
    "WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID": "Elastic Premium only: identity that reads the package",
}
PREMIUM_ONLY = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID",
}
# "Flex Consumption plan deprecations" (functions-app-settings): rejected or meaningless there.
FLEX_FORBIDDEN = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTOVERVNET",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
}

# Values of settings without a default in the code: where each must come from in the end.
EXPECTED_SOURCES = {
    "GATEWAY_PUBLIC_BASE_URL": "https://${site.properties.defaultHostName}",
    "GATEWAY_TABLES_ENDPOINT": "storage.properties.primaryEndpoints.table",
    "KEY_VAULT_URL": "vault.properties.vaultUri",
    "AZURE_CLIENT_ID": "identity.properties.clientId",
    "AzureWebJobsStorage__clientId": "identity.properties.clientId",
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__accountName": "storage.name",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "appInsights.properties.ConnectionString",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD;ClientId=${identityClientId}",
    "FUNCTIONS_EXTENSION_VERSION": "~4",
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "PYTHON_ENABLE_INIT_INDEXING": "1",
    "WEBSITE_RUN_FROM_PACKAGE": "${storage.properties.primaryEndpoints.blob}${deploymentContainerName}"
    "/${premiumPackageBlobName}",
    "WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID": "identity.id",
}

# Built-in role definition ids (identical in every tenant).
ROLE_NAMES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
EXPECTED_ROLES = {
    ("Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"),
    ("Storage Table Data Contributor", "Microsoft.Storage/storageAccounts"),
    ("Key Vault Secrets Officer", "Microsoft.KeyVault/vaults"),
    ("Monitoring Metrics Publisher", "Microsoft.Insights/components"),
}

FORBIDDEN_TEXT = re.compile(
    r"\blist\w*\(|AccountKey=|SharedAccessSignature|primaryKey|secondaryKey|primaryMasterKey", re.IGNORECASE
)
SECRET_LOOKING_OUTPUT = re.compile(
    r"ConnectionString|InstrumentationKey|list\w*\(|SharedAccess|AccountKey|secret", re.IGNORECASE
)
SECRET_REFERENCE = re.compile(r"@Microsoft\.KeyVault\(|getSecret\(", re.IGNORECASE)
SUPPRESSION = re.compile(r"//\s*checkov:skip=([A-Z0-9_]+)(?::\s*(.*))?$")


# --- parsing and expression helpers ------------------------------------------------------------


@functools.cache
def parsed(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def secure_params() -> set[str]:
    return {
        name
        for path in BICEP_FILES
        for name, param in (parsed(path).get("parameters") or {}).items()
        if any(d["type"] == "secure" for d in param["decorators"])
    }


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def render(node: Any) -> str:
    """A pycep expression node back to Bicep-like text, enough to compare and read in a failure."""
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "true" if node else "false"
    if isinstance(node, int | float):
        return str(node)
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "[" + ", ".join(render(item) for item in node) + "]"
    if isinstance(node, dict) and set(node) == {"function"}:
        fn = node["function"]
        args = ", ".join(render(v) for v in (fn.get("parameters") or {}).values() if v is not None)
        name = re.sub(r"_(\w)", lambda m: m.group(1).upper(), fn["type"])
        text = f"{name}({args})"
        prop = fn.get("property_name")
        if prop:
            text += "." + re.sub(r"^\[Token\('\w+', '(.*)'\)\]$", r"\1", str(prop))
        return text
    if isinstance(node, dict) and set(node) == {"operator"}:
        op = node["operator"]
        ops = op["operands"]
        if op["type"] == "property_accessor":
            return f"{render(ops['operand_1'])}.{render(ops['operand_2'])}"
        if op["type"] == "conditional":
            return f"{render(ops['condition'])} ? {render(ops['true_value'])} : {render(ops['false_value'])}"
        return f"{op['type']}(" + ", ".join(render(v) for v in ops.values()) + ")"
    if isinstance(node, dict):
        return "{" + ", ".join(f"{k.strip(chr(39))}: {render(v)}" for k, v in node.items()) + "}"
    return repr(node)


def resources(path: Path, type_: str | None = None) -> dict[str, dict[str, Any]]:
    """Resources declared (not `existing`) in a file, optionally of one type. A conditional resource
    (`= if (...) {...}`) comes with its body as `config`, like the others, and its `condition` beside it."""
    found = parsed(path).get("resources") or {}
    declared = {
        name: res for name, res in found.items() if not res.get("existing") and (type_ is None or res["type"] == type_)
    }
    return {
        name: {**res, "config": res["config"]["config"], "condition": res["config"]["condition"]}
        if set(res["config"]) == {"condition", "config"} else res
        for name, res in declared.items()
    }


def one(path: Path, type_: str) -> dict[str, Any]:
    found = resources(path, type_)
    assert len(found) == 1, f"{rel(path)}: expected one {type_}, found {sorted(found)}"
    return next(iter(found.values()))["config"]


def main_modules() -> dict[str, Path]:
    """Module symbol in main.bicep -> its file."""
    return {name: (INFRA / mod["detail"]["path"]).resolve() for name, mod in parsed(MAIN)["modules"].items()}


def module_symbol(path: Path) -> str:
    matches = [name for name, file in main_modules().items() if file == path.resolve()]
    assert len(matches) == 1, f"{rel(path)} must be used exactly once from main.bicep"
    return matches[0]


def resolve(expr: Any, path: Path) -> tuple[str, Path]:
    """Follow a value to its origin: variables, module parameters (to what main.bicep passes)
    and module outputs (to what the module returns). Returns the final expression and its file."""
    for _ in range(20):
        text = render(expr)
        doc = parsed(path)
        variables, params = doc.get("variables") or {}, doc.get("parameters") or {}
        output = re.fullmatch(r"(\w+)\.outputs\.(\w+)", text)
        if text in variables:
            expr = variables[text]["value"]
        elif path != MAIN and text in params:
            passed = parsed(MAIN)["modules"][module_symbol(path)]["config"]["params"]
            if text not in passed:
                return text, path
            expr, path = passed[text], MAIN
        elif path == MAIN and output and output.group(1) in main_modules():
            path = main_modules()[output.group(1)]
            expr = parsed(path)["outputs"][output.group(2)]["value"]
        else:
            return text, path
    raise AssertionError(f"cannot resolve {render(expr)} in {rel(path)}")


def collect_settings(expr: Any, path: Path, plan: str | None, into: dict[str, tuple[Any, Path]]) -> None:
    """Every app setting in an appsettings expression (union / conditional / variables /
    parameters / object literals). plan None takes both branches of `isFlex ? a : b`."""
    text = render(expr) if isinstance(expr, str) else None
    if isinstance(expr, dict) and set(expr) == {"function"} and expr["function"]["type"] == "union":
        for arg in expr["function"]["parameters"].values():
            if arg is not None:
                collect_settings(arg, path, plan, into)
    elif isinstance(expr, dict) and set(expr) == {"operator"} and expr["operator"]["type"] == "conditional":
        ops = expr["operator"]["operands"]
        assert ops["condition"] == "isFlex", f"unexpected condition in app settings: {render(ops['condition'])}"
        if plan in (None, "FlexConsumption"):
            collect_settings(ops["true_value"], path, plan, into)
        if plan in (None, "ElasticPremium"):
            collect_settings(ops["false_value"], path, plan, into)
    elif text is not None:
        doc = parsed(path)
        if text in (doc.get("variables") or {}):
            collect_settings(doc["variables"][text]["value"], path, plan, into)
        elif path != MAIN and text in (doc.get("parameters") or {}):
            passed = parsed(MAIN)["modules"][module_symbol(path)]["config"]["params"]
            assert text in passed, f"main.bicep does not pass {text} to {rel(path)}"
            collect_settings(passed[text], MAIN, plan, into)
        else:
            raise AssertionError(f"cannot read app settings from {text} in {rel(path)}")
    elif isinstance(expr, dict):
        for key, value in expr.items():
            name = key.strip("'")
            assert name not in into, f"app setting {name} is set twice"
            into[name] = (value, path)
    else:
        raise AssertionError(f"unexpected app settings expression {render(expr)}")


FUNCTIONAPP = INFRA / "modules" / "functionapp.bicep"


def app_settings(plan: str | None = None) -> dict[str, tuple[Any, Path]]:
    config = [
        res["config"]
        for res in resources(FUNCTIONAPP, "Microsoft.Web/sites/config").values()
        if res["config"]["name"] == "appsettings"
    ]
    assert len(config) == 1, "functionapp.bicep must set app settings in one sites/config 'appsettings'"
    found: dict[str, tuple[Any, Path]] = {}
    collect_settings(config[0]["properties"], FUNCTIONAPP, plan, found)
    return found


def const(node: ast.expr) -> Any:
    """Evaluate a constant expression such as `1024 * 1024` without eval."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult | ast.Add):
        left, right = const(node.left), const(node.right)
        return left * right if isinstance(node.op, ast.Mult) else left + right
    raise AssertionError(f"not a constant: {ast.unparse(node)}")


@functools.cache
def code_settings() -> dict[str, Any]:
    """App settings shared/settings.py reads: name -> default (None when it has none)."""
    tree = ast.parse(SETTINGS_PY.read_text())
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found: dict[str, Any] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_str", "_int")):
            continue
        name, default = const(node.args[0]), None
        if node.func.id == "_int":
            default = const(node.args[1])
        else:
            parent = parents.get(node)
            if isinstance(parent, ast.BoolOp) and isinstance(parent.op, ast.Or) and parent.values[0] is node:
                default = const(parent.values[1])
        found[name] = default
    assert found, "no _str(...)/_int(...) calls found in shared/settings.py"
    return found


def env_reads_outside_settings() -> set[str]:
    """Literal names read with os.environ / os.getenv anywhere else in the deployed code."""
    pattern = re.compile(r"""(?:environ\.get|getenv|environ\[)\(?\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")
    return {
        name
        for path in DEPLOYED_CODE
        if path.exists() and path != SETTINGS_PY
        for name in pattern.findall(path.read_text())
    }


# --- syntax and wiring ----------------------------------------------------------------------------


def test_infra_has_main_and_modules() -> None:
    assert MAIN.exists()
    assert len(BICEP_FILES) >= 5, [rel(p) for p in BICEP_FILES]


@pytest.mark.parametrize("path", BICEP_FILES, ids=rel)
def test_bicep_parses(path: Path) -> None:
    doc = parsed(path)  # raises on a syntax error
    assert doc.get("resources") or doc.get("modules"), f"{rel(path)} declares nothing"


def test_main_uses_every_module_and_passes_what_they_need() -> None:
    modules = main_modules()
    module_files = {p.resolve() for p in BICEP_FILES if p != MAIN}
    assert set(modules.values()) == module_files, "every module file is used once from main.bicep"
    text = MAIN.read_text()
    for symbol, path in modules.items():
        params = parsed(path).get("parameters") or {}
        passed = parsed(MAIN)["modules"][symbol]["config"]["params"]
        assert set(passed) <= set(params), f"{symbol}: unknown params {set(passed) - set(params)}"
        required = {name for name, p in params.items() if p["default"] is None}
        assert required <= set(passed), f"{symbol}: missing params {required - set(passed)}"
        outputs = set(parsed(path).get("outputs") or {})
        for used in re.findall(rf"\b{symbol}\.outputs\.(\w+)", text):
            assert used in outputs, f"main.bicep reads {symbol}.outputs.{used}, which {rel(path)} lacks"


@pytest.mark.parametrize("path", BICEP_FILES, ids=rel)
def test_no_unused_parameters_or_variables(path: Path) -> None:
    """What the Bicep linter's no-unused-params / no-unused-vars would catch."""
    code = "\n".join(re.sub(r"(^|\s)//.*$", "", line) for line in path.read_text().splitlines())
    doc = parsed(path)
    for name in [*(doc.get("parameters") or {}), *(doc.get("variables") or {})]:
        assert len(re.findall(rf"(?<![\w.]){name}\b", code)) > 1, f"{rel(path)}: {name} is declared but never used"


def test_parameters_file_feeds_main() -> None:
    params = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    declared = parsed(MAIN)["parameters"]
    assert set(params) <= set(declared)
    required = {name for name, p in declared.items() if p["default"] is None}
    assert required <= set(params), f"azd cannot fill {required - set(params)}"
    assert params["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert params["location"]["value"] == "${AZURE_LOCATION}"


def test_azure_yaml_deploys_the_repo_as_a_python_function() -> None:
    text = (ROOT / "azure.yaml").read_text()
    lines = {line.strip() for line in text.splitlines()}
    for expected in (
        "provider: bicep",
        "path: infra",
        "module: main",
        "api:",
        "project: .",
        "language: python",
        "host: function",
    ):
        assert expected in lines, f"azure.yaml lacks '{expected}'"
    funcignore = {line.strip().rstrip("/") for line in (ROOT / ".funcignore").read_text().splitlines()}
    assert {"infra", "tests", "devtools", "docs"} <= funcignore, "project: . must not deploy these"


# --- names and tags -------------------------------------------------------------------------------


def test_names_derive_from_subscription_resource_group_and_environment() -> None:
    token = render(parsed(MAIN)["variables"]["resourceToken"]["value"])
    assert token == "toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))"
    names = parsed(MAIN)["variables"]["names"]["value"]
    sample = "a" * 13  # uniqueString() returns 13 characters
    rules = {
        "storage": r"[a-z0-9]{3,24}",
        "keyVault": r"[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]",
        "functionApp": r"[a-z0-9][a-z0-9-]{0,58}[a-z0-9]",
        "deploymentContainer": r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]",
    }
    for key, pattern in rules.items():
        name = names[key].replace("${resourceToken}", sample)
        assert re.fullmatch(pattern, name), f"{key} name {name!r} breaks Azure naming rules"


def test_every_resource_is_tagged_and_the_app_is_the_azd_service() -> None:
    untaggable = {"Microsoft.Authorization/roleAssignments", "Microsoft.Insights/diagnosticSettings"}
    for path in BICEP_FILES:
        for name, res in resources(path).items():
            if res["type"].count("/") == 1 and res["type"] not in untaggable:
                assert "tags" in res["config"], f"{rel(path)}: {name} has no tags"
    tags = parsed(MAIN)["variables"]["tags"]["value"]
    assert tags["'azd-env-name'"] == "environmentName"
    site = one(FUNCTIONAPP, "Microsoft.Web/sites")
    assert render(site["tags"]) == "union(tags, {azd-service-name: api})"
    for symbol, module in parsed(MAIN)["modules"].items():
        if "tags" in (parsed(main_modules()[symbol]).get("parameters") or {}):
            assert module["config"]["params"]["tags"] == "tags", f"{symbol} gets the common tags"


# --- security properties --------------------------------------------------------------------------

STORAGE = INFRA / "modules" / "storage.bicep"
KEYVAULT = INFRA / "modules" / "keyvault.bicep"
MONITORING = INFRA / "modules" / "monitoring.bicep"
ROLES = INFRA / "modules" / "roles.bicep"


def test_storage_accepts_only_entra_id_over_tls12() -> None:
    props = one(STORAGE, "Microsoft.Storage/storageAccounts")["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["allowBlobPublicAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True
    container = one(STORAGE, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert container["properties"]["publicAccess"] == "None"
    tables = {
        render(t["config"]["name"])
        for t in resources(STORAGE, "Microsoft.Storage/storageAccounts/tableServices/tables").values()
    }
    passed = parsed(MAIN)["modules"][module_symbol(STORAGE)]["config"]["params"]
    settings = app_settings()
    for name in (n for n in code_settings() if n.endswith("_TABLE")):
        param, _ = resolve(*settings[name])
        created = {key for key, value in passed.items() if value == param and key in tables}
        assert created, f"{name} ({param}) names no table that storage.bicep creates"
    others = [p for p in BICEP_FILES if p != STORAGE and resources(p, "Microsoft.Storage/storageAccounts")]
    assert not others, "one storage account, configured in storage.bicep"


def test_function_app_is_https_only_tls12_no_ftp_no_basic_auth_no_cors() -> None:
    site = one(FUNCTIONAPP, "Microsoft.Web/sites")
    props, config = site["properties"], site["properties"]["siteConfig"]
    assert props["httpsOnly"] is True
    assert config["minTlsVersion"] == "1.2"
    assert config["scmMinTlsVersion"] == "1.2"
    assert config["ftpsState"] == "Disabled"
    assert render(config["cors"]["allowedOrigins"]) == "corsAllowedOrigins"
    assert parsed(FUNCTIONAPP)["parameters"]["corsAllowedOrigins"]["default"] == []
    assert parsed(MAIN)["parameters"]["corsAllowedOrigins"]["default"] == []
    assert config["cors"]["supportCredentials"] is False
    assert site["identity"]["type"] == "UserAssigned"
    assert list(site["identity"]["userAssignedIdentities"]) == ["'${identityId}'"]
    policies = {
        res["config"]["name"]: res["config"]["properties"]["allow"]
        for res in resources(FUNCTIONAPP, "Microsoft.Web/sites/basicPublishingCredentialsPolicies").values()
    }
    assert policies == {"ftp": False, "scm": False}


def test_flex_consumption_runs_python_311_from_blob_read_with_the_identity() -> None:
    site = one(FUNCTIONAPP, "Microsoft.Web/sites")
    assert render(site["properties"]["functionAppConfig"]) == "isFlex ? flexFunctionAppConfig : null"
    variables = parsed(FUNCTIONAPP)["variables"]
    flex = variables["flexFunctionAppConfig"]["value"]
    storage = flex["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    assert flex["runtime"]["name"] == "python"
    assert variables[flex["runtime"]["version"]]["value"] == "3.11"
    assert render(variables["flexSku"]["value"]) == "{name: FC1, tier: FlexConsumption}"
    assert parsed(MAIN)["parameters"]["hostingPlan"]["default"] == "FlexConsumption"
    assert parsed(MAIN)["parameters"]["flexAlwaysReadyInstances"]["default"] == 0, "scale to zero by default"
    assert render(site["properties"]["siteConfig"]["linuxFxVersion"]) == "isFlex ? null : Python|${pythonVersion}"


def test_flex_app_settings_avoid_the_flex_deprecations() -> None:
    flex = set(app_settings("FlexConsumption"))
    assert not flex & FLEX_FORBIDDEN, f"rejected on Flex Consumption: {flex & FLEX_FORBIDDEN}"
    premium = app_settings("ElasticPremium")
    assert set(premium) >= PREMIUM_ONLY
    assert set(premium) - flex == PREMIUM_ONLY


def test_key_vault_uses_rbac_soft_delete_and_purge_protection() -> None:
    vault = one(KEYVAULT, "Microsoft.KeyVault/vaults")
    props = vault["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert "accessPolicies" not in props
    retention = parsed(KEYVAULT)["parameters"][props["softDeleteRetentionInDays"]]["default"]
    assert 7 <= retention <= 90
    assert props["publicNetworkAccess"] == "publicNetworkAccess"
    assert props["enabledForTemplateDeployment"] is False
    audit = one(KEYVAULT, "Microsoft.Insights/diagnosticSettings")
    assert audit["scope"] == "vault" and audit["properties"]["logs"][0]["categoryGroup"] == "audit"


def test_telemetry_uses_entra_id_not_keys() -> None:
    insights = one(MONITORING, "Microsoft.Insights/components")["properties"]
    assert insights["DisableLocalAuth"] is True
    workspace = one(MONITORING, "Microsoft.OperationalInsights/workspaces")["properties"]
    assert workspace["features"]["disableLocalAuth"] is True
    settings = app_settings()
    value, path = settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert value == "Authorization=AAD;ClientId=${identityClientId}"
    assert resolve("identityClientId", path)[0] == "identity.properties.clientId"


def test_role_assignments_are_least_privilege_and_scoped_to_their_resource() -> None:
    found = set()
    for path in BICEP_FILES:
        doc = parsed(path)
        everything = doc.get("resources") or {}
        for name, res in resources(path, "Microsoft.Authorization/roleAssignments").items():
            config = res["config"]
            scope = config.get("scope")
            assert isinstance(scope, str) and scope in everything, (
                f"{rel(path)}: {name} must be scoped to a resource, not the resource group or subscription"
            )
            role = config["properties"]["roleDefinitionId"]["function"]
            assert role["type"] == "subscription_resource_id"
            assert role["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
            role_id = doc["variables"][role["parameters"]["resource_name_1"]]["value"]
            assert role_id in ROLE_NAMES, f"{rel(path)}: {name} grants unexpected role {role_id}"
            assert config["properties"]["principalType"] == "ServicePrincipal"
            assert resolve(config["properties"]["principalId"], path)[0] == "identity.properties.principalId"
            assert render(config["name"]).startswith(f"guid({scope}.id, principalId, ")
            found.add((ROLE_NAMES[role_id], everything[scope]["type"]))
    assert found == EXPECTED_ROLES


def test_no_keys_or_secrets_in_templates_outputs_or_app_settings() -> None:
    for path in BICEP_FILES:
        code = "\n".join(re.sub(r"(^|\s)//.*$", "", line) for line in path.read_text().splitlines())
        assert not FORBIDDEN_TEXT.search(code), f"{rel(path)}: {FORBIDDEN_TEXT.search(code).group(0)}"
        doc = parsed(path)
        secure = {
            name
            for name, p in (doc.get("parameters") or {}).items()
            if any(d["type"] == "secure" for d in p["decorators"])
        }
        for name, output in (doc.get("outputs") or {}).items():
            value = render(output["value"])
            assert not SECRET_LOOKING_OUTPUT.search(value), f"{rel(path)}: output {name} = {value}"
            assert not any(re.search(rf"\b{s}\b", value) for s in secure), f"{rel(path)}: {name} leaks @secure"
            assert not any(d["type"] == "secure" for d in output["decorators"]), f"{rel(path)}: secure output"
    for name, (value, path) in app_settings().items():
        final, _ = resolve(value, path)
        for text in (render(value), final):
            assert not FORBIDDEN_TEXT.search(text), f"app setting {name} = {text}"
            assert not SECRET_REFERENCE.search(text), f"app setting {name} = {text}: no secrets in app settings"
            assert not any(re.search(rf"\b{p}\b", text) for p in secure_params()), f"{name} uses a @secure param"
    assert "AzureWebJobsStorage" not in app_settings(), "host storage must be identity-based"


# --- app settings against the code ----------------------------------------------------------------


def test_every_setting_the_code_reads_is_provisioned() -> None:
    read = set(code_settings()) | env_reads_outside_settings()
    assert set(LOCAL_ONLY) <= read, f"stale LOCAL_ONLY entries: {set(LOCAL_ONLY) - read}"
    provisioned = set(app_settings())
    missing = read - set(LOCAL_ONLY) - provisioned
    assert not missing, f"read by the code but not provisioned in infra/: {sorted(missing)}"
    leaked = provisioned & set(LOCAL_ONLY)
    assert not leaked, f"local-only settings provisioned in Azure: {sorted(leaked)}"


def test_nothing_provisioned_is_unused() -> None:
    unused = set(app_settings()) - set(code_settings()) - env_reads_outside_settings() - set(PLATFORM_SETTINGS)
    assert not unused, (
        f"provisioned but read by nothing known: {sorted(unused)} (add to PLATFORM_SETTINGS with a reason)"
    )
    stale = set(PLATFORM_SETTINGS) - set(app_settings())
    assert not stale, f"PLATFORM_SETTINGS lists settings no longer provisioned: {sorted(stale)}"


def test_provisioned_values_match_the_code() -> None:
    declared = parsed(MAIN)["parameters"]
    defaults = code_settings()
    for name, (value, path) in sorted(app_settings().items()):
        final, where = resolve(value, path)
        converted = re.fullmatch(r"string\((\w+)\)", final)
        param = converted.group(1) if converted else final
        if defaults.get(name) is not None:
            assert where == MAIN and param in declared, f"{name} = {final}: expected a main.bicep parameter"
            assert declared[param]["default"] == defaults[name], (
                f"{name}: main.bicep default {declared[param]['default']!r} != shared/settings.py {defaults[name]!r}"
            )
            assert (declared[param]["type"] == "int") == isinstance(defaults[name], int)
            assert (converted is not None) == isinstance(defaults[name], int), f"{name}: ints go through string()"
        else:
            assert name in EXPECTED_SOURCES, f"{name} = {final}: add where it must come from to EXPECTED_SOURCES"
            assert final == EXPECTED_SOURCES[name], f"{name} = {final}, expected {EXPECTED_SOURCES[name]}"


def test_local_settings_sample_documents_every_setting() -> None:
    sample = set(json.loads((ROOT / "local.settings.json.sample").read_text())["Values"])
    assert set(code_settings()) <= sample, f"undocumented: {set(code_settings()) - sample}"
    unexplained = sample - set(code_settings()) - set(app_settings()) - set(LOCAL_SAMPLE_ONLY)
    assert not unexplained, f"local.settings.json.sample has unexplained settings: {sorted(unexplained)}"


# --- outputs --------------------------------------------------------------------------------------


def test_outputs_give_the_urls_the_teams_app_and_operators_need() -> None:
    outputs = parsed(MAIN)["outputs"]
    assert render(parsed(MAIN)["variables"]["baseUrl"]["value"]) == "https://${functionApp.outputs.defaultHostName}"
    assert resolve("functionApp.outputs.defaultHostName", MAIN)[0] == "site.properties.defaultHostName"
    urls = Urls("https://host.example")
    expected = {
        "FHIR_BASE_URL_STU3": urls.fhir_base("stu3"),
        "FHIR_BASE_URL_DSTU2": urls.fhir_base("dstu2"),
        "TOKEN_URL": urls.token_url,
        "MANAGEMENT_BASE_URL": urls.manage_url,
    }
    for name, url in expected.items():
        assert render(outputs[name]["value"]).replace("${baseUrl}", urls.base) == url, name
    assert resolve(outputs["FUNCTION_APP_NAME"]["value"], MAIN)[0] == "site.name"
    assert resolve(outputs["KEY_VAULT_URI"]["value"], MAIN)[0] == "vault.properties.vaultUri"
    assert resolve(outputs["TABLE_ENDPOINT"]["value"], MAIN)[0] == "storage.properties.primaryEndpoints.table"


def test_deploy_doc_only_names_outputs_that_exist() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    named = set(re.findall(r"get-value ([A-Z0-9_]+)", doc)) | set(re.findall(r"outputs\.([A-Z0-9_]+)\.value", doc))
    assert named, "docs/deploy.md should show how to read the deployment outputs"
    assert named <= set(parsed(MAIN)["outputs"]), (
        f"unknown outputs in docs/deploy.md: {named - set(parsed(MAIN)['outputs'])}"
    )


# --- deploy guards (issue #15): region, scale floor, zone redundancy, package contents, pins ------------

MAIN_LOCATION_SOURCE = re.compile(r"^// Source: .*\n(?://\s+https://\S+.*\n)+", re.MULTILINE)
RETRIEVED = re.compile(r"^// Retrieved: (\d{4}-\d{2}-\d{2})\.", re.MULTILINE)


def decorator(param: dict[str, Any], kind: str) -> Any:
    found = [d["argument"] for d in param["decorators"] if d["type"] == kind]
    assert len(found) == 1, f"expected one @{kind}"
    return found[0]


def test_location_is_limited_to_flex_consumption_regions_listed_with_source_and_date() -> None:
    regions = decorator(parsed(MAIN)["parameters"]["location"], "allowed")
    assert len(regions) >= 20 and regions == sorted(set(regions)), "one sorted list, no duplicates"
    assert all(re.fullmatch(r"[a-z][a-z0-9]*", r) for r in regions), "names as az account list-locations gives them"
    text = MAIN.read_text()
    header = text[: text.index("param location string")]
    assert MAIN_LOCATION_SOURCE.search(header), "the list names its source (https URLs) on a '// Source:' line"
    retrieved = RETRIEVED.search(header)
    assert retrieved, "the list says when it was retrieved ('// Retrieved: YYYY-MM-DD.')"
    assert date.fromisoformat(retrieved.group(1)) <= date.today()
    assert "az functionapp list-flexconsumption-locations" in header, "how to refresh the list"
    docs = (ROOT / "README.md").read_text() + (ROOT / "docs" / "deploy.md").read_text()
    for example in re.findall(r"--location (\w+)", docs):
        assert example in regions, f"the docs deploy to {example}, which the template refuses"


def test_flex_maximum_instance_count_has_the_platform_floor_of_40() -> None:
    for path in (MAIN, FUNCTIONAPP):
        param = parsed(path)["parameters"]["flexMaximumInstanceCount"]
        assert decorator(param, "min_value") == 40, f"{rel(path)}: @minValue(40), as Microsoft's Flex samples"
        assert decorator(param, "max_value") == 1000, rel(path)
        assert 40 <= param["default"] <= 1000, rel(path)
    passed = parsed(MAIN)["modules"][module_symbol(FUNCTIONAPP)]["config"]["params"]
    assert passed["flexMaximumInstanceCount"] == "flexMaximumInstanceCount"
    flex = parsed(FUNCTIONAPP)["variables"]["flexFunctionAppConfig"]["value"]
    assert flex["scaleAndConcurrency"]["maximumInstanceCount"] == "flexMaximumInstanceCount"


_BINARY = {
    "and": lambda a, b: a and b,
    "or": lambda a, b: a or b,
    "equals": lambda a, b: a == b,
    "not_equals": lambda a, b: a != b,
    "greater_than": lambda a, b: a > b,
    "greater_than_or_equals": lambda a, b: a >= b,
    "less_than": lambda a, b: a < b,
    "less_than_or_equals": lambda a, b: a <= b,
}


def evaluate(node: Any, path: Path, env: dict[str, Any]) -> Any:
    """The value of a Bicep expression for given parameter values: variables, conditionals, logic,
    comparisons and min/max, which is what a guard is made of. Checks a guard's effect without Azure.
    Anything else fails loudly rather than being guessed."""
    if node is None or isinstance(node, bool | int):
        return node
    if isinstance(node, str):
        variables = parsed(path).get("variables") or {}
        if node in env:
            return env[node]
        if node in variables:
            return evaluate(variables[node]["value"], path, env)
        return node  # a string literal
    if isinstance(node, dict) and set(node) == {"operator"}:
        op, operands = node["operator"]["type"], node["operator"]["operands"]
        if op == "conditional":
            branch = "true_value" if evaluate(operands["condition"], path, env) else "false_value"
            return evaluate(operands[branch], path, env)
        if op == "not":
            return not evaluate(operands["bool_value"], path, env)
        if op in _BINARY:
            return _BINARY[op](evaluate(operands["operand_1"], path, env), evaluate(operands["operand_2"], path, env))
    if isinstance(node, dict) and set(node) == {"function"} and node["function"]["type"] in ("max", "min"):
        args = [evaluate(v, path, env) for v in node["function"]["parameters"].values() if v is not None]
        return max(args) if node["function"]["type"] == "max" else min(args)
    if isinstance(node, dict) and not set(node) & {"operator", "function"}:
        return {key: evaluate(value, path, env) for key, value in node.items()}
    raise AssertionError(f"cannot evaluate {render(node)} in {rel(path)}")


def test_zone_redundant_elastic_premium_never_runs_below_two_instances() -> None:
    """Microsoft's "Reliability in Azure Functions" (Premium): a zone-redundant plan needs at least two
    instances. Every allowed premiumMinimumInstances is tried, with and without zone redundancy."""
    plan = one(FUNCTIONAPP, "Microsoft.Web/serverfarms")
    site = one(FUNCTIONAPP, "Microsoft.Web/sites")
    param = parsed(FUNCTIONAPP)["parameters"]["premiumMinimumInstances"]
    low, high = decorator(param, "min_value"), decorator(param, "max_value")
    for zone_redundant in (False, True):
        for minimum in range(low, high + 1):
            env = {"hostingPlan": "ElasticPremium", "zoneRedundant": zone_redundant, "premiumMinimumInstances": minimum}
            capacity = evaluate(plan["sku"], FUNCTIONAPP, env)["capacity"]
            always_ready = evaluate(site["properties"]["siteConfig"]["minimumElasticInstanceCount"], FUNCTIONAPP, env)
            assert capacity == always_ready, f"plan capacity {capacity} != app minimum {always_ready} ({env})"
            assert capacity == (max(minimum, 2) if zone_redundant else minimum), env
            assert evaluate(plan["properties"]["zoneRedundant"], FUNCTIONAPP, env) is zone_redundant
    flex = {"hostingPlan": "FlexConsumption", "zoneRedundant": True, "premiumMinimumInstances": 1}
    assert evaluate(plan["sku"], FUNCTIONAPP, flex) == {"name": "FC1", "tier": "FlexConsumption"}
    passed = parsed(MAIN)["modules"][module_symbol(FUNCTIONAPP)]["config"]["params"]
    assert passed["zoneRedundant"] == "zoneRedundant" and passed["premiumMinimumInstances"] == "premiumMinimumInstances"


# What the Functions host runs, by rule rather than by list, so new modules under shared/ and new
# dependencies need no change here: the entry point, the host and dependency files, and the shared
# package (without bytecode caches).
RUNTIME_FILES = {"function_app.py", "host.json", "requirements.txt"}
RUNTIME_PACKAGES = {"shared"}

# Untracked things an operator's checkout holds that must never be published: azd's environment
# (.azure/<env>/.env holds the deployment outputs), virtual environments under the usual names,
# dotenv files, local settings, caches, test output.
LOCAL_ONLY_PATHS = [
    ".azure/config.json",
    ".azure/fhirgw-prod/.env",
    ".azure/fhirgw-prod/config.json",
    ".env",
    ".venv/bin/python",
    ".venv/lib/python3.11/site-packages/requests/__init__.py",
    ".venv-tools/bin/checkov",
    "venv/bin/python",
    "gateway_env/lib/python3.11/site-packages/jwt/__init__.py",
    "local.settings.json",
    ".local/stack.json",
    "node_modules/azurite/package.json",
    "shared/__pycache__/proxy.cpython-311.pyc",
    ".pytest_cache/v/cache/nodeids",
    "test-artifacts/report.txt",
    "bench/results/latest.json",
]


def is_runtime(path: str) -> bool:
    parts = PurePosixPath(path).parts
    if path in RUNTIME_FILES:
        return True
    return parts[0] in RUNTIME_PACKAGES and "__pycache__" not in parts and not path.endswith(".pyc")


def test_funcignore_leaves_exactly_the_runtime_files_in_the_package() -> None:
    """.funcignore has gitignore semantics for Core Tools (azure-functions-core-tools#341) and azd
    (azure-dev#5383). Applied to every tracked file plus the local-only folders above, what remains
    must be exactly what the host runs: no tools, tests, docs, azd environments or virtual envs."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    candidates = set(tracked.splitlines()) | set(LOCAL_ONLY_PATHS)
    assert {"function_app.py", "host.json", "requirements.txt"} <= candidates
    ignore = GitIgnoreSpec.from_lines((ROOT / ".funcignore").read_text().splitlines())
    packaged = {path for path in candidates if not ignore.match_file(path)}
    runtime = {path for path in candidates if is_runtime(path)}
    assert not packaged - runtime, f"published but not needed at runtime: {sorted(packaged - runtime)}"
    assert not runtime - packaged, f"needed at runtime but excluded: {sorted(runtime - packaged)}"


def imported_modules(paths: list[Path]) -> dict[str, Path]:
    """Every absolute import in the deployed code (lazy ones inside functions included) -> a file
    that makes it."""
    found: dict[str, Path] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update({alias.name: path for alias in node.names})
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found[node.module] = path
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def files_by_distribution() -> dict[str, str]:
    """Installed file (as recorded, e.g. 'azure/core/__init__.py') -> the distribution that ships it."""
    owners: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            owners.setdefault(file.as_posix(), dist.metadata["Name"])
    return owners


def distribution_of(module: str) -> str | None:
    """The distribution that provides `module`; None for the standard library and the app's own code.
    A namespace package shared by several distributions (azure.*, azurefunctions.*) is resolved by
    which one ships the module's files."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names or top in RUNTIME_PACKAGES or f"{top}.py" in RUNTIME_FILES:
        return None
    candidates = sorted(set(importlib.metadata.packages_distributions().get(top, [])))
    if len(candidates) == 1:
        return candidates[0]
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        stem = "/".join(parts[:depth])
        for file in (f"{stem}/__init__.py", f"{stem}.py"):
            if file in files_by_distribution():
                return files_by_distribution()[file]
    raise AssertionError(f"{module} is imported by the deployed code but not installed: pin it in "
                         "requirements.txt and run scripts/setup")


def test_every_package_the_deployed_code_imports_is_pinned() -> None:
    """A package imported but only pulled in transitively (urllib3 by requests, say) changes version
    whenever its parent does; the deployed code must not depend on that by accident. Each one is pinned
    with == in requirements.txt, and the tests run against that very version."""
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)", requirement)
            assert match, f"requirements.txt: {requirement!r} is not pinned with =="
            pins[canonical(match.group(1))] = match.group(2)
    imports = imported_modules(DEPLOYED_CODE)
    needed = {dist: module for module in sorted(imports) if (dist := distribution_of(module))}
    assert "azure-functions" in {canonical(d) for d in needed}, "the scan found no third-party imports"
    for dist, module in sorted(needed.items()):
        where = rel(imports[module])
        assert canonical(dist) in pins, f"{where} imports {module} ({dist}), which requirements.txt does not pin"
        installed = importlib.metadata.version(dist)
        assert installed == pins[canonical(dist)], (
            f"{dist}: requirements.txt pins {pins[canonical(dist)]}, the tests run {installed} (run scripts/setup)"
        )


# --- alerts and the workbook over the audit lines ------------------------------------------------------

ALERTS = INFRA / "modules" / "monitoring-alerts.bicep"


def audit_fields() -> dict[str, set[str]]:
    """Audit event name -> the fields the deployed code writes for it: each dict literal with a
    constant "event" key, plus later `record["x"] = ...` on the same name in the same module."""
    fields: dict[str, set[str]] = {}
    for path in DEPLOYED_CODE:
        tree = ast.parse(path.read_text(), filename=str(path))
        records: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Dict):
                keys = [k.value for k in node.value.keys if isinstance(k, ast.Constant)]
                event = next((v.value for k, v in zip(node.value.keys, node.value.values, strict=True)
                              if isinstance(k, ast.Constant) and k.value == "event" and isinstance(v, ast.Constant)),
                             None)
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if event is not None:
                    fields.setdefault(event, set()).update(keys)
                    records.update({t.id: event for t in targets if isinstance(t, ast.Name)})
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)
                            and target.value.id in records and isinstance(target.slice, ast.Constant)):
                        fields[records[target.value.id]].add(target.slice.value)
    return fields


def expand(text: str, path: Path) -> str:
    """A Bicep string (or the name of a string variable) with its ${...} interpolations of variables
    and parameter defaults filled in."""
    doc = parsed(path)
    variables, params = doc.get("variables") or {}, doc.get("parameters") or {}
    if text in variables:
        return expand(variables[text]["value"], path)

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in variables:
            return expand(variables[name]["value"], path)
        assert name in params and params[name]["default"] is not None, f"{rel(path)}: cannot fill ${{{name}}}"
        return str(params[name]["default"])
    return re.sub(r"\$\{(\w+)\}", value, text)


def alert_queries() -> dict[str, str]:
    """Every KQL query in the alerts module: the log alert rules' and the workbook's."""
    queries = {
        name: expand(res["config"]["properties"]["criteria"]["allOf"][0]["query"], ALERTS)
        for name, res in resources(ALERTS, "Microsoft.Insights/scheduledQueryRules").items()
    }
    for name, query in parsed(ALERTS)["variables"]["workbookQueries"]["value"].items():
        queries[f"workbook.{name}"] = expand(query, ALERTS)
    return queries


def test_alert_rules_watch_5xx_provider_failures_per_tenant_key_vault_throttling_and_token_spikes() -> None:
    rules = resources(ALERTS, "Microsoft.Insights/scheduledQueryRules")
    assert set(rules) == {"serverErrorRate", "upstreamFailureRate", "tokenFailureSpike"}
    queries = alert_queries()
    for name, res in rules.items():
        props = res["config"]["properties"]
        assert props["enabled"] is True and render(props["scopes"]) == "[appInsights.id]", name
        assert props["actions"] == "logAlertActions", f"{name} notifies the action group"
        assert props["autoMitigate"] is True, f"{name} resolves itself when the condition clears"
    per_tenant = rules["upstreamFailureRate"]["config"]["properties"]["criteria"]["allOf"][0]
    assert [d["name"] for d in per_tenant["dimensions"]] == ["tenant_id"], "one alert per tenant"
    assert "by tenant_id" in queries["upstreamFailureRate"]
    assert "status in (502, 504)" in queries["upstreamFailureRate"]
    assert "status >= 500" in queries["serverErrorRate"]
    assert 'outcome != "issued"' in queries["tokenFailureSpike"]
    throttling = one(ALERTS, "Microsoft.Insights/metricAlerts")
    criterion = throttling["properties"]["criteria"]["allOf"][0]
    assert render(throttling["properties"]["scopes"]) == "[vault.id]"
    assert (criterion["metricNamespace"], criterion["metricName"]) == ("Microsoft.KeyVault/vaults", "ServiceApiResult")
    assert criterion["dimensions"] == [{"name": "StatusCode", "operator": "Include", "values": ["429"]}]
    existing = parsed(ALERTS)["resources"]
    assert resolve(existing["vault"]["config"]["name"], ALERTS)[0] == "vault.name", "watches the gateway's vault"
    assert resolve(existing["appInsights"]["config"]["name"], ALERTS)[0] == "appInsights.name"


def test_alerts_email_the_address_given_as_a_parameter() -> None:
    group = resources(ALERTS, "Microsoft.Insights/actionGroups")["actionGroup"]
    assert render(group["condition"]) == "not(empty(alertEmailAddress))", "no address, no action group"
    receivers = group["config"]["properties"]["emailReceivers"]
    assert [r["emailAddress"] for r in receivers] == ["alertEmailAddress"]
    assert resolve("alertEmailAddress", ALERTS) == ("alertEmailAddress", MAIN), "main.bicep's parameter"
    assert parsed(MAIN)["parameters"]["alertEmailAddress"]["default"] == ""
    azd = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert azd["alertEmailAddress"]["value"] == "${ALERT_EMAIL_ADDRESS}", "azd env set ALERT_EMAIL_ADDRESS"
    actions = parsed(ALERTS)["variables"]["logAlertActions"]["value"]["actionGroups"]
    assert render(actions) == "empty(alertEmailAddress) ? [] : [actionGroup.id]"
    metric_actions = one(ALERTS, "Microsoft.Insights/metricAlerts")["properties"]["actions"]
    assert render(metric_actions) == "empty(alertEmailAddress) ? [] : [{actionGroupId: actionGroup.id}]"


def test_workbook_shows_requests_latency_percentiles_by_tenant_upstream_errors_and_token_outcomes() -> None:
    workbook = one(ALERTS, "Microsoft.Insights/workbooks")
    assert workbook["kind"] == "shared" and render(workbook["properties"]["sourceId"]) == "appInsights.id"
    assert render(workbook["properties"]["serializedData"]) == "string(workbookContent)"
    content = parsed(ALERTS)["variables"]["workbookContent"]["value"]
    assert content["version"] == "Notebook/1.0"
    shown = {render(item["content"]["query"]) for item in content["items"] if item["type"] == 3}
    assert shown == {f"workbookQueries.{name}" for name in ("requests", "latencyByTenant", "upstreamErrors",
                                                             "tokenOutcomes")}
    queries = alert_queries()
    assert "percentilew(duration_ms, itemCount, 95)" in queries["workbook.latencyByTenant"]
    assert "by tenant_id" in queries["workbook.latencyByTenant"]
    assert "by outcome" in queries["workbook.tokenOutcomes"]


def test_alert_and_workbook_queries_read_only_fields_the_audit_lines_carry() -> None:
    """The queries parse the JSON audit lines; a renamed field in the code would silently empty an
    alert. Every event they filter on is one the code emits, and every field they read, one it writes.
    Functions samples traces adaptively by default, so counts go through itemCount."""
    written = audit_fields()
    assert {"fhir-request", "token-request"} <= set(written), f"audit events found in the code: {sorted(written)}"
    for name, query in alert_queries().items():
        events = set(re.findall(r'tostring\(audit\.event\) == "([\w-]+)"', query))
        assert len(events) == 1, f"{name}: filters on one audit event, found {events}"
        event = events.pop()
        assert event in written, f"{name}: the code writes no {event!r} audit line"
        assert "itemCount" in query and not re.search(r"\bcount(if)?\(|\bpercentiles?\(", query), (
            f"{name}: Functions samples traces; count with sum(itemCount), weight percentiles by itemCount"
        )
        read = set(re.findall(r"\baudit\.(\w+)", query)) - {"event"}
        assert read, f"{name} reads no audit field"
        assert read <= written[event], f"{name} reads {sorted(read - written[event])}, not in the {event} audit line"


# --- checkov --------------------------------------------------------------------------------------


def checkov_binary() -> str | None:
    local = ROOT / ".venv-tools" / "bin" / "checkov"
    return str(local) if local.exists() else shutil.which("checkov")


def inline_suppressions() -> dict[tuple[str, str], str]:
    found = {}
    for path in BICEP_FILES:
        for line in path.read_text().splitlines():
            match = SUPPRESSION.search(line.strip())
            if match:
                found[("/" + path.relative_to(INFRA).as_posix(), match.group(1))] = (match.group(2) or "").strip()
    return found


def test_every_checkov_suppression_gives_its_reason() -> None:
    for (file, check), reason in inline_suppressions().items():
        assert len(reason) >= 30, f"{file}: checkov:skip={check} needs a reason after the colon"


def test_checkov_passes_with_only_reasoned_inline_suppressions() -> None:
    checkov = checkov_binary()
    if checkov is None:
        message = "checkov is not installed: run scripts/install-infra-tools (creates .venv-tools/)"
        if os.environ.get("CI"):
            pytest.fail(message)  # scripts/setup installs it, so in CI its absence is a broken setup
        pytest.skip(message)
    env = {**os.environ, "LOG_LEVEL": "ERROR"}
    run = subprocess.run(
        [checkov, "-d", str(INFRA), "--framework", "bicep", "-o", "json", "--skip-download"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert run.returncode in (0, 1), run.stderr[-2000:]
    report = json.loads(run.stdout)
    report = report[0] if isinstance(report, list) else report
    summary, results = report["summary"], report["results"]
    failed = [
        f"{r['check_id']} {r['resource']} ({r['file_path']}): {r['check_name']}" for r in results["failed_checks"]
    ]
    assert not failed, "checkov failed:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0, f"checkov could not parse: {results.get('parsing_errors')}"
    assert summary["passed"] > 0 and summary["resource_count"] > 0
    skipped = {(r["file_path"], r["check_id"]) for r in results["skipped_checks"]}
    assert skipped == set(inline_suppressions()), (
        f"suppressions that no longer match a finding: {set(inline_suppressions()) - skipped}; "
        f"skips without an inline suppression: {skipped - set(inline_suppressions())}"
    )


# --- the real Bicep compiler, where installed ------------------------------------------------------


def bicep_command() -> list[str] | None:
    if shutil.which("bicep"):
        return [shutil.which("bicep")]
    installed_by_az = Path.home() / ".azure" / "bin" / "bicep"
    return [str(installed_by_az)] if installed_by_az.exists() else None


def test_bicep_cli_builds_the_templates(tmp_path: Path) -> None:
    command = bicep_command()
    if command is None:
        pytest.skip(
            "no Bicep CLI here (`bicep` on PATH or `az bicep install`); pycep-parser and checkov checked the syntax"
        )
    out = tmp_path / "main.json"
    run = subprocess.run(
        [*command, "build", str(MAIN), "--outfile", str(out)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    template = json.loads(out.read_text())
    assert template["resources"], "compiled template is empty"
    assert "Error" not in run.stderr, run.stderr
