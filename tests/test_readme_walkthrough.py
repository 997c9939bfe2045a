"""The README's API walk-through, pasted into a shell in order, works against a real server.

Which blocks run: every ```bash fenced block in README.md whose previous line is an HTML comment
starting with `<!-- walkthrough` (the comment itself is invisible on GitHub). Blocks run in the
order they appear, as ONE bash script (variables carry over from one block to the next), with
`set -euo pipefail` and every `curl` made to fail on an HTTP error status (`--fail-with-body`).
So a new README section with commands a reader is meant to paste gets that marker, and is then
checked here too. The only rewrite: the README's `http://127.0.0.1:8000` becomes the address of
the test's server (a fresh SQLite database, migrated, served by `uvicorn app.main:app`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.live_server import ROOT, migrate, server_env, sqlite_url, uvicorn_server

README = ROOT / "README.md"
README_ORIGIN = "http://127.0.0.1:8000"
_MARKED_BLOCK = re.compile(r"^<!-- walkthrough[^\n]*-->\n```bash\n(.*?)^```$", re.M | re.S)
_CURL = re.compile(r"(?<![\w-])curl\s")
# Every curl fails on an HTTP error (printing the body) and is counted, so the test knows
# that each one in the README really ran.
PRELUDE = """set -euo pipefail
curl() {
  echo x >> "$CURL_COUNT_FILE"
  command curl --fail-with-body --show-error --max-time 60 "$@"
}
"""


def walkthrough_blocks() -> list[str]:
    return _MARKED_BLOCK.findall(README.read_text(encoding="utf-8"))


def test_the_readme_marks_its_walkthrough() -> None:
    blocks = walkthrough_blocks()
    assert blocks, "no <!-- walkthrough --> bash block in README.md"
    assert any("/auth/register" in block for block in blocks)


def test_every_walkthrough_command_works_when_pasted_in_order(tmp_path: Path) -> None:
    blocks = walkthrough_blocks()
    script_body = "\n".join(blocks)
    assert README_ORIGIN in script_body
    expected_curls = sum(
        len(_CURL.findall(line))
        for line in script_body.splitlines()
        if not line.lstrip().startswith("#")
    )
    # The walk-through's webhook goes to a receiver on loopback, as the README says to allow.
    env = server_env(sqlite_url(tmp_path), WEBHOOK_ALLOW_PRIVATE_URLS="true")
    migrate(env, tmp_path)
    count_file = tmp_path / "curl-count"
    count_file.write_text("")
    with uvicorn_server("app.main:app", env, tmp_path) as server:
        script = PRELUDE + script_body.replace(README_ORIGIN, server.url)
        result = subprocess.run(  # noqa: S603 - the README's own commands
            ["bash", "-c", script],  # noqa: S607
            env={**env, "CURL_COUNT_FILE": str(count_file)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    ran = len(count_file.read_text().splitlines())
    assert result.returncode == 0, (
        f"the walk-through stopped after {ran} curl command(s)\n"
        f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    )
    assert ran == expected_curls, (ran, expected_curls)
    # Spot checks that the commands did what the README says.
    assert '"email":"bob@example.com"' in result.stdout
    assert '"status":"won"' in result.stdout
    assert "X-Cache:" in result.stdout or "x-cache:" in result.stdout
    assert "signature ok: deal.updated" in result.stdout
    assert "id,organization_id,contact_id,owner_id,title,amount," in result.stdout  # the export
    assert result.stdout.rstrip().endswith("204")
