"""The documentation against the code: every option key is in docs/options.md, every command of README.md and docs/
parses as written (through the real argument parsers, without running), every option file they name loads, every
relative link resolves."""
import argparse
import glob
import os.path as osp
import re
import shlex
import sys
from contextlib import contextmanager
from importlib import import_module
from unittest import mock

import pytest

import sdan_basicsr
import sdan_basicsr_autoload
from sdan_basicsr.utils import cpu_memory
from sdan_basicsr.utils.options_check import check_option_file, plugin_option_keys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: The pages whose commands must run as written.
COMMAND_PAGES = ['README.md'] + sorted(osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'docs', '*.md')))
#: The pages whose relative links must resolve.
LINK_PAGES = COMMAND_PAGES + ['CHANGELOG.md', 'bench/RESULTS.md', 'bench/README.md', 'bench/demo_options.md']
#: Launchers of BasicSR's pipelines: script or module as a command names it → is_train.
PIPELINE_LAUNCHERS = {'sdan_basicsr/train.py': True, 'sdan_basicsr/test.py': False, 'sdan_basicsr.train': True,
                      'sdan_basicsr.test': False, 'basicsr.train': True, 'basicsr.test': False,
                      'basicsr/train.py': True, 'basicsr/test.py': False}
#: First words of shell lines that set up the environment rather than run the project.
SET_UP = ('pip', 'cd', '.', 'source', 'export', 'git')
PYTHONS = ('python', 'python3', '.venv/bin/python')


def read(page: str) -> str:
    with open(osp.join(ROOT, page), encoding='utf-8') as f:
        return f.read()


def without_comments(text: str) -> str:
    """``text`` without its HTML comments (notes for the next edit, not shown to readers)."""
    return re.sub(r'<!--.*?-->', '', text, flags=re.DOTALL)


def console_scripts() -> dict:
    """``sdan-*`` command → (module, function), as ``setup.py`` installs them."""
    return {name: (module, func) for name, module, func in re.findall(r"'([\w-]+)=([\w.]+):(\w+)'", read('setup.py'))}


def bash_commands(page: str) -> list:
    """The commands of the ```bash blocks of ``page``: continuation lines joined, one command per ``&&`` part."""
    commands = []
    for block in re.findall(r'```bash\n(.*?)```', without_comments(read(page)), flags=re.DOTALL):
        for line in block.replace('\\\n', ' ').splitlines():
            for part in line.split('&&'):
                words = shlex.split(part, comments=True)
                while words and re.fullmatch(r'[A-Z_][A-Z0-9_]*=\S*', words[0]):  # VAR=value before a command
                    words = words[1:]
                if words:
                    commands.append(words)
    return commands


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace):
        super().__init__()
        self.parser, self.namespace = parser, namespace


@contextmanager
def parse_only():
    """Within it, a ``parse_args`` call parses and then raises :class:`_Parsed` instead of returning: a command's
    ``main`` checks its arguments with its real parser and stops before doing anything."""
    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        raise _Parsed(self, original(self, args, namespace))

    with mock.patch.object(argparse.ArgumentParser, 'parse_args', parse_args):
        yield


def parse_with_main(module: str, func: str, argv: list) -> _Parsed:
    """``module.func`` parses ``argv`` (given as its argument, or as ``sys.argv`` to a ``main()`` without one)."""
    main = getattr(import_module(module), func)
    with parse_only(), mock.patch.object(sys, 'argv', [module] + list(argv)):
        try:
            main(argv) if main.__code__.co_argcount else main()
        except _Parsed as parsed:
            return parsed
    raise AssertionError(f'{module}.{func} returned without parsing its arguments')


def parse_pipeline(argv: list, is_train: bool) -> dict:
    """BasicSR's ``parse_options`` (what every launcher runs) on ``argv``, with the option file loaded and checked;
    a distributed launcher is parsed, then left out (no process group is started)."""
    from basicsr.utils import options

    original = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        parsed = original(self, args, namespace)
        parsed.launcher = 'none'
        return parsed

    with mock.patch.object(argparse.ArgumentParser, 'parse_args', parse_args), \
            mock.patch.object(sys, 'argv', ['train.py' if is_train else 'test.py'] + list(argv)):
        opt, args = options.parse_options(ROOT, is_train)
    check_option_file(osp.join(ROOT, args.opt), is_train)
    return opt


def run_as_written(words: list) -> None:
    """Check one documented command without running it: its program exists and its arguments parse."""
    scripts = console_scripts()
    if words[0] == 'torchrun':
        from torch.distributed.run import get_args_parser

        launch = get_args_parser().parse_args(words[1:])
        words = ['python'] + (['-m'] if launch.module else []) + [launch.training_script] + launch.training_script_args
    if words[0] in scripts:
        module, func = scripts[words[0]]
        target, argv = module, words[1:]
    elif words[0] in PYTHONS and words[1] == '-m':
        target, argv, func = words[2], words[3:], 'main'
    elif words[0] in PYTHONS:
        target, argv, func = words[1], words[2:], 'main'
    elif words[0] == 'bash':
        assert osp.isfile(osp.join(ROOT, words[1])), f'no script {words[1]}'
        return
    else:
        raise AssertionError(f'unknown program {words[0]!r}: teach tests/test_docs.py how to check it')
    if target in PIPELINE_LAUNCHERS:
        parse_pipeline(argv, PIPELINE_LAUNCHERS[target])
    elif target.startswith('bench/') or target.startswith('scripts/'):  # measured or run elsewhere, not here
        assert osp.isfile(osp.join(ROOT, target)), f'no script {target}'
    elif target.startswith('sdan_basicsr.'):
        parse_with_main(target, func, argv)
    else:
        raise AssertionError(f'unknown program {target!r}: teach tests/test_docs.py how to check it')


def documented_commands() -> list:
    return [(page, words) for page in COMMAND_PAGES for words in bash_commands(page)
            if words[0] not in SET_UP and words[:3] != ['python', '-m', 'venv']]


@pytest.mark.parametrize('page,words', documented_commands(), ids=lambda x: ' '.join(x) if isinstance(x, list) else x)
def test_documented_command_parses_as_written(page, words):
    try:
        run_as_written(words)
    except SystemExit as err:  # argparse's answer to arguments it does not take
        raise AssertionError(f'{page}: `{shlex.join(words)}` does not parse (exit {err.code}), see stderr') from None


def test_every_page_has_commands_and_the_readme_its_two_quick_start_commands():
    pages = {page for page, _ in documented_commands()}
    assert {'README.md', 'docs/datasets.md', 'docs/training.md', 'docs/zoom.md'} <= pages
    commands = [' '.join(words) for words in bash_commands('README.md')]
    assert commands[:2] == ['bash scripts/demo.sh', 'bash scripts/test.sh']


@pytest.mark.parametrize('command', sorted(console_scripts()))
def test_help_of_every_console_script(command, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the pipeline launchers work from the project root
    module, func = console_scripts()[command]
    main = getattr(import_module(module), func)
    with mock.patch.object(sys, 'argv', [command, '--help']), pytest.raises(SystemExit) as exit_:
        main(['--help']) if main.__code__.co_argcount else main()
    assert exit_.value.code == 0
    assert 'usage:' in capsys.readouterr().out


@pytest.mark.parametrize('is_train', [True, False])
def test_help_of_the_pipeline_launchers(is_train, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_pipeline(['--help'], is_train)
    assert exit_.value.code == 0
    assert '-opt OPT' in capsys.readouterr().out


def referenced_option_files() -> list:
    """Every option file README.md and docs/ name, a folder of them (``options/baselines/``) standing for its files."""
    paths = set()
    for page in COMMAND_PAGES:
        for ref in re.findall(r'\boptions/[\w./-]*', read(page)):
            full = osp.join(ROOT, ref)
            assert osp.exists(full), f'{page} names {ref}, which does not exist'
            paths.update(glob.glob(osp.join(full, '*.yml')) if osp.isdir(full) else [full])
    return sorted(osp.relpath(p, ROOT) for p in paths if p.endswith('.yml'))


@pytest.mark.parametrize('path', referenced_option_files())
def test_referenced_option_file_parses(path):
    is_train = osp.basename(path).startswith('train_')
    opt = parse_pipeline(['-opt', path], is_train)
    assert opt['network_g']['type'] and opt['datasets']


def options_md_sections() -> dict:
    """Heading of each ``## `` section of docs/options.md → the keys in the first column of its tables."""
    sections = {}
    for part in re.split(r'^## ', read('docs/options.md'), flags=re.MULTILINE)[1:]:
        heading, _, body = part.partition('\n')
        rows = [line.split('|')[1] for line in body.splitlines() if line.startswith('| `')]
        sections[heading.strip()] = {key for cell in rows for key in re.findall(r'`(\w+)`', cell)}
    return sections


def test_every_option_key_the_plugin_understands_is_in_options_md():
    sections = options_md_sections()
    for label, keys in plugin_option_keys().items():
        assert label in sections, f'docs/options.md has no section "## {label}"'
        missing = set(keys) - sections[label]
        assert not missing, f'docs/options.md, section {label}: keys not documented: {sorted(missing)}'
        unknown = sections[label] - set(keys)
        assert not unknown, f'docs/options.md, section {label}: keys the plugin does not read: {sorted(unknown)}'


def test_every_environment_variable_is_in_options_md():
    variables = {'SDAN_ROOT', sdan_basicsr_autoload.ENV_VAR, cpu_memory.ENV}
    assert variables == options_md_sections()['Environment variables']


def test_every_flag_of_sdan_zoom_is_in_zoom_md():
    argv = ['in.ARW', '--weights', 'w.pth', '-o', 'out.png']
    parser = parse_with_main('sdan_basicsr.tools.zoom', 'main', argv).parser
    page = read('docs/zoom.md')
    flags = [flag for action in parser._actions for flag in action.option_strings if flag not in ('-h', '--help')]
    missing = [flag for flag in flags if f'`{flag}`' not in page]
    assert not missing, f'docs/zoom.md does not document {missing}'


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(page: str) -> set:
    text = re.sub(r'```.*?```', '', read(page), flags=re.DOTALL)
    return {slug(h) for h in re.findall(r'^#+ (.+)$', text, flags=re.MULTILINE)}


@pytest.mark.parametrize('page', LINK_PAGES)
def test_relative_links_resolve(page):
    text = re.sub(r'```.*?```', '', without_comments(read(page)), flags=re.DOTALL)
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'[a-z]+:', target):
            continue
        path, _, anchor = target.partition('#')
        linked = osp.normpath(osp.join(osp.dirname(page), path)) if path else page
        assert osp.exists(osp.join(ROOT, linked)), f'{page} links {target}: no {linked}'
        if anchor:
            assert anchor in anchors(linked), f'{page} links {target}: {linked} has no heading #{anchor}'


def test_changelog_names_the_version():
    assert re.search(rf'^## {re.escape(sdan_basicsr.__version__)}$', read('CHANGELOG.md'), flags=re.MULTILINE)
    assert re.search(r'^## Unreleased$', read('CHANGELOG.md'), flags=re.MULTILINE)
