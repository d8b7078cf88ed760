"""Size and shape of the ms_vit package, for issue notes: lines of the training module, the longest function, the
functions that take the whole training config, the package tree.

    python bench/code_metrics.py [ROOT]        (ROOT: a checkout, default this one)

"Takes the whole config": a parameter named ``cfg`` that is not annotated as a ViTConfig or a dict (the training
config's name everywhere in ms_vit). Lines are physical lines (``wc -l``).
"""

from __future__ import annotations

import ast
import os


def functions(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def takes_whole_config(node) -> bool:
    for arg in node.args.args + node.args.kwonlyargs:
        if arg.arg == "cfg":
            note = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            return not any(word in note for word in ("ViTConfig", "dict"))
    return False


def main(root: str) -> None:
    package = os.path.join(root, "ms_vit")
    files = sorted(os.path.join(folder, name) for folder, _, names in os.walk(package) for name in names
                   if name.endswith(".py"))
    train = next(p for p in (os.path.join(package, "train", "run.py"), os.path.join(package, "train.py"))
                 if os.path.exists(p))
    longest, whole = [], []
    for path in files:
        with open(path) as handle:
            tree = ast.parse(handle.read())
        rel = os.path.relpath(path, root)
        for node in functions(tree):
            longest.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.name}"))
            if takes_whole_config(node):
                whole.append(f"{rel}:{node.name}")
    with open(train) as handle:
        print(f"{os.path.relpath(train, root)}: {len(handle.read().splitlines())} lines")
    longest.sort(reverse=True)
    print("longest functions: " + ", ".join(f"{name} {n}" for n, name in longest[:3]))
    modules = sorted({name.split(":")[0] for name in whole})
    print(f"functions taking the whole training config: {len(whole)} in {len(modules)} modules")
    for name in whole:
        print(f"  {name}")
    print(f"modules: {len(files)}; package tree:")
    for folder, dirs, names in sorted(os.walk(package)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        py = sorted(n for n in names if n.endswith(".py"))
        if py:
            print(f"  {os.path.relpath(folder, root)}/: {' '.join(py)}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        help="a checkout of ms_vit (default: this one)")
    main(parser.parse_args().root)
