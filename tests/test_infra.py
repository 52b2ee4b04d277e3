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
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
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
    """Resources declared (not `existing`) in a file, optionally of one type."""
    found = parsed(path).get("resources") or {}
    return {
        name: res for name, res in found.items() if not res.get("existing") and (type_ is None or res["type"] == type_)
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
