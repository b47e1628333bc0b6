"""mypy sees a task's parameters and result: the example passes --strict, wrong submissions fail.

One mypy run (strict, no cache) over examples/shop and a producer that gets every call wrong
once; shoal is seen as the installed, typed package it is (py.typed), as a user's mypy sees it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Each wrong line, and the mypy error code it must get.
WRONG = {
    'price.submit("1999", 0.2)': "arg-type",  # a str where the task takes an int
    "price.submit(1999)": "call-arg",  # a parameter missing
    'price.submit(1999, tax="0.2")': "call-arg",  # a keyword the function does not have
    'client.submit(price, "1999", 0.2)': "call-overload",  # the same through a client
    'batch.submit(confirm, "o-1", "100")': "call-overload",  # and inside a batch
    'text: int = confirm.submit("o-1", 100).result()': "assignment",  # the result is a str
    'price.options(priority="high").submit(1, 0.2)': "arg-type",  # options are typed too
    "total: str = client.run(price, 1, 0.2)": "assignment",  # run gives the result, an int
}


def test_mypy_passes_the_example_and_refuses_every_wrong_submission(tmp_path: Path) -> None:
    lines = [
        "import shoal",
        "from shop.tasks import confirm, price",
        "",
        "client = shoal.Client()",
        "batch = client.batch()",
    ]
    first = len(lines) + 1
    lines += list(WRONG)
    wrong = tmp_path / "wrong_producer.py"
    wrong.write_text("\n".join(lines) + "\n")
    config = tmp_path / "mypy.ini"
    config.write_text(f"[mypy]\nstrict = True\nmypy_path = {EXAMPLES}\ncache_dir = {tmp_path / 'cache'}\n")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), str(EXAMPLES / "shop"), str(wrong)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = re.findall(r"^(.+?):(\d+): error: .*\[([a-z-]+)\]$", done.stdout, flags=re.M)
    assert all(Path(path).name == wrong.name for path, _, _ in errors), done.stdout  # the example is clean
    found = {int(line): code for _, line, code in errors}
    expected = {first + i: code for i, code in enumerate(WRONG.values())}
    assert found == expected, done.stdout
