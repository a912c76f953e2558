"""No configured text runs as code in the ebuild.

Layer 1: the configuration refuses values bash would give meaning to (file and
key named, exit 2).  Layer 2: what is accepted is printed as an inert bash word,
and Portage's own ``ebuild ... manifest`` (which sources the ebuild) runs the
real build.  Each payload would create a marker file if it ever ran.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from releaser.cli import main
from releaser.config import AppConfig, DatabaseConfig
from releaser.build.ebuild import (_ebuild_environment, _xml_environment, render_ebuild,
                             template_variables)
from releaser.errors import BuildError

from .conftest import write_config


@pytest.fixture
def marker():
    """A short absolute path (a DESCRIPTION holds at most 80 characters) no test creates."""
    folder = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))
    yield folder / "M"
    shutil.rmtree(folder)


def payloads(marker: Path) -> dict[str, str]:
    return {
        "close-quote": f'x"; touch {marker}; : "',
        "dollar-paren": f"x $(touch {marker})",
        "backticks": f"x `touch {marker}`",
        "newline": f"x\ntouch {marker}",
        "dollar-brace": f"x ${{IFS}}touch${{IFS}}{marker}",
        "single-quote": f"x'; touch {marker}; : '",
        "semicolon": f"Notes; touch {marker} & echo | cat > {marker}",
    }


def sourced(ebuild: Path, *names: str) -> list[str]:
    """The values bash gives ``names`` after sourcing ``ebuild`` (Portage's P and PN set)."""
    script = 'P=notes-1.0.0 PN=notes; source "$1"; shift; for n; do printf "%s\\0" "${!n}"; done'
    out = subprocess.run(["bash", "-c", script, "_", str(ebuild), *names], check=True,
                         capture_output=True, text=True).stdout
    return out.split("\0")[:-1]


# --- layer 2 alone: the template quotes whatever it is given ----------------

def test_every_template_value_is_inert_even_unvalidated(tmp_path, marker):
    """Hostile values that bypass validation still reach bash only as data."""
    for label, payload in payloads(marker).items():
        app = AppConfig(name="notes", category="www-apps", source=tmp_path, subdir="app",
                        license=payload, description=payload, homepage=payload,
                        rdepend=(payload, "dev-python/flask"))
        variables = template_variables(app, f"http://h/{payload}", DatabaseConfig(path=payload),
                                       2026)
        ebuild = tmp_path / f"{label}.ebuild"
        ebuild.write_text(render_ebuild(variables))
        values = sourced(ebuild, "DESCRIPTION", "HOMEPAGE", "SRC_URI", "LICENSE", "RDEPEND",
                         "APP_DB")
        assert values == [payload, payload, f"http://h/{payload}/notes-1.0.0.tar.gz", payload,
                          f"\n\t{payload}\n\tdev-python/flask\n", payload], label
        assert not marker.exists(), label


def test_the_ebuild_takes_the_app_s_contract(tmp_path):
    """Install location, module and database variable come from releaser.appcontract."""
    app = AppConfig(name="notes", category="www-apps", source=tmp_path, subdir="app",
                    database_env="NOTES_DB")
    variables = template_variables(app, "http://h/d", DatabaseConfig(path="/srv/n.db"), 2026)
    ebuild = tmp_path / "notes-1.0.0.ebuild"
    ebuild.write_text(render_ebuild(variables))
    assert sourced(ebuild, "APP_DIR", "APP_MODULE", "APP_DB", "APP_DB_ENV") == [
        "/usr/lib/notes", "notes", "/srv/n.db", "NOTES_DB"]
    assert 'env "${APP_DB_ENV}=${db}"' in ebuild.read_text()


def test_a_value_printed_without_the_filter_fails_the_build():
    env = _ebuild_environment()
    with pytest.raises(BuildError, match="without the bash filter"):
        env.from_string("DESCRIPTION=\"{{ description }}\"\n").render(description="x")
    assert env.from_string("# {{ year }}").render(year=2026) == "# 2026"


def test_metadata_xml_is_escaped():
    env = _xml_environment()
    out = env.from_string("<name>{{ v }}</name>").render(v="</name><x a='1'>&")
    assert out == "<name>&lt;/name&gt;&lt;x a=&#39;1&#39;&gt;&amp;</name>"


# --- both layers through the real build ------------------------------------

APP_FIELDS = ("name", "category", "description", "homepage", "license", "rdepend",
              "tag_prefix", "subdir", "source", "database_env", "health_path")

#: (field, payload label) pairs the configuration accepts: they must be rendered inert.
INERT = {("description", "single-quote"), ("description", "semicolon")}


def configured(config: Path, field: str, payload: str) -> None:
    """Put ``payload`` into ``field`` of the [app] table (or the database/distfiles keys)."""
    text = config.read_text()
    value = {"homepage": f"https://example.invalid/{payload}",
             "distfiles_url": f"http://127.0.0.1:9/{payload}",
             "database": f"/var/lib/notes/{payload}"}.get(field, payload)
    if field == "rdepend":
        text = text.replace("rdepend = [", f"rdepend = [{json.dumps(payload)}, ", 1)
    elif field == "database":
        text += f'\n[environments.staging]\ndatabase = {{ path = {json.dumps(value)} }}\n'
    elif field == "distfiles_url":
        lines = [ln for ln in text.splitlines() if not ln.startswith("distfiles_url")]
        text = "\n".join(lines).replace("[central]", f"[central]\ndistfiles_url = "
                                                     f"{json.dumps(value)}")
    else:
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{field} =")]
        text = "\n".join(lines).replace("[app]", f"[app]\n{field} = {json.dumps(value)}", 1)
    config.write_text(text)


@pytest.mark.parametrize("field", APP_FIELDS + ("distfiles_url", "database"))
@pytest.mark.parametrize("label", ["close-quote", "dollar-paren", "backticks", "newline",
                                   "dollar-brace", "single-quote", "semicolon"])
def test_hostile_config_value_is_refused_or_inert(tmp_path, app_repo, marker, capsys,
                                                  field, label):
    payload = payloads(marker)[label]
    config = write_config(tmp_path / "releaser.toml", app_repo)
    configured(config, field, payload)
    out = tmp_path / "out"
    code = main(["-c", str(config), "build", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert not marker.exists()
    if (field, label) not in INERT:
        key = {"database": "environments.staging.database.path",
               "distfiles_url": "central.distfiles_url"}.get(field, f"app.{field}")
        if field == "rdepend":
            key = "app.rdepend[0]"
        assert code == 2, captured
        assert captured.err.startswith(f"releaser: error: {config}: {key}: "), captured.err
        assert captured.err.count("\n") == 1, captured.err
        assert not out.exists()
        return
    assert code == 0, captured.err
    record = json.loads(captured.out)
    ebuild = out / "releases" / f"notes-{record['version']}" / record["ebuild"]["name"]
    assert sourced(ebuild, "DESCRIPTION") == [payload]
    assert (out / "releases" / f"notes-{record['version']}" / "Manifest").is_file()
