"""The one-way import flow the README's Layout draws: circuit_core knows nothing of the dashboard,
ui's modules import only those below them, and no module imports a page."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ui's modules from the bottom up; a module may import its own layer's and those below.
UI_LAYERS = [
    {"format", "view", "serve", "circuits", "diagram", "charts", "evidence_charts"},  # no Streamlit
    {"report"},  # no Streamlit: the lab-meeting report from charts and format
    {"session"},  # the one object in Streamlit's session state
    {"state"},  # the page's Context and the shared cached resources
    {"jobs", "runs"},
    {"sidebar", "headline", "background", "edges"},
]
NO_STREAMLIT = UI_LAYERS[0] | UI_LAYERS[1]


def imports(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def layer(name: str) -> int:
    return next(i for i, names in enumerate(UI_LAYERS) if name in names)


def test_the_core_never_imports_the_dashboard():
    for path in (ROOT / "circuit_core").rglob("*.py"):
        bad = {m for m in imports(path) if m.split(".")[0] in ("ui", "pages", "streamlit", "dashboard")}
        assert not bad, (path.relative_to(ROOT), bad)


def test_ui_modules_import_only_their_layer_and_below():
    modules = {p.stem for p in (ROOT / "ui").glob("*.py")} - {"__init__"}
    assert modules == set().union(*UI_LAYERS), "every ui module has a layer in this test and the README"
    for name in modules:
        used = imports(ROOT / "ui" / f"{name}.py")
        above = {m for m in used if m.startswith("ui.") and m.split(".")[1] in modules
                 and layer(m.split(".")[1]) > layer(name)}
        assert not above, (name, above)
        if name in NO_STREAMLIT:
            assert not any(m.split(".")[0] == "streamlit" for m in used), name


def test_no_module_imports_a_page():
    for path in [*ROOT.glob("*.py"), *(ROOT / "ui").glob("*.py"), *(ROOT / "circuit_core").rglob("*.py")]:
        assert not any(m.split(".")[0] == "pages" for m in imports(path)), path
