"""Command line entry point: `timm-shakedrop COMMAND [ARGS]`.

Each command lives in its own module with a `main(argv) -> int`, imported only when it runs.
"""
import difflib
import importlib
import sys
from typing import List, Optional

COMMANDS = {
    'train': ('timm_shakedrop.cli.train', 'train a model on the embedded digits, CIFAR or an image folder'),
    'export': ('timm_shakedrop.cli.export', 'export a training checkpoint to safetensors with a model card'),
    'push': ('timm_shakedrop.cli.push', 'upload an exported folder to the Hugging Face Hub'),
}


def _usage() -> str:
    lines = ['usage: timm-shakedrop COMMAND [ARGS]', '', 'commands:']
    for name, (_, help_text) in COMMANDS.items():
        lines.append(f'  {name:<8} {help_text}')
    lines.append('')
    lines.append("Run 'timm-shakedrop COMMAND --help' for the options of a command.")
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command named by the first argument and return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == '--version':
        from timm_shakedrop import __version__

        print(f'timm-shakedrop {__version__}')
        return 0
    command = argv[0]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ''
        print(f"timm-shakedrop: error: unknown command '{command}'.{hint} Commands: {', '.join(COMMANDS)}.",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(argv[1:]) or 0)
