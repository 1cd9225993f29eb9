"""The scripts where a learner runs them besides a shell: pasted whole into a Jupyter cell, and imported from a
notebook, each in a real Jupyter kernel (nbclient and ipykernel are test-only dependencies)."""
import re, textwrap
import pytest
from test_smoke import ROOT, SCRIPTS, TINY, final_losses, text_file  # noqa: F401 (text_file: a fixture)

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')


def run_cells(cells, cwd):
    """Runs the cells in one new kernel started in cwd; returns each cell's text output (stdout and stderr)."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name='python3', allow_errors=True,
                                     resources={'metadata': {'path': str(cwd)}})
    client.execute()
    outputs = []
    for cell in notebook.cells:
        text = ''
        for out in cell.outputs:
            if out.output_type == 'stream':
                text += out.text
            elif out.output_type == 'error':
                text += f'{out.ename}: {out.evalue}\n'
        outputs.append(text)
    return outputs


def tiny_settings(script):  # TINY's command-line settings as {name: Python source of the value}
    return dict(arg.removeprefix('--').split('=', 1) for arg in TINY[script])


@pytest.mark.parametrize('script', SCRIPTS)
def test_the_script_pasted_into_a_cell_trains_there(script, text_file, tmp_path):
    # as a learner does in Colab: the whole file in one cell, a few settings edited at the top, run; the
    # files (the text, the checkpoint) are in the notebook's folder, and the kernel's arguments are no settings
    (tmp_path / 'input.txt').write_text(text_file.read_text(encoding='utf-8'), encoding='utf-8')
    source = (ROOT / script).read_text(encoding='utf-8')
    for name, value in {**tiny_settings(script), 'num_chars': '80'}.items():
        source, n = re.subn(rf'^{name} = .*$', f'{name} = {value}', source, count=1, flags=re.M)
        assert n == 1, name
    # the notebook had some of the settings' names before (their places in globals() stay where they were)
    before, out = run_cells(["input_file, seed = 'elsewhere.txt', 42", source], tmp_path)
    assert 'Error' not in out and 'for a known name' not in out, out
    final_losses(out)  # it trained to the end
    assert (tmp_path / ('gpt.pt' if script == 'gpt.py' else 'bigram.pt')).is_file()
    assert f"input_file='{tmp_path / 'input.txt'}'" in out  # the text beside the notebook
    settings = next(line for line in out.splitlines() if line.startswith('settings:'))
    part = source[source.index(' settings'):]
    part = part[:part.index('\n# ---')]
    assert re.findall(r' (\w+)=', settings) == re.findall(r'^([a-z]\w*) += ', part, re.M)  # all, and no more


@pytest.mark.parametrize('script', SCRIPTS)
def test_main_called_from_a_notebook(script, text_file, tmp_path):
    # import it and call main(): settings set on the module or passed as arguments, never the kernel's own
    # arguments; each call leaves the settings as they were; the time budget counts from the call
    module = script.removesuffix('.py')
    settings = '\n'.join(f'{module}.{name} = {value}' for name, value in tiny_settings(script).items())
    cells = [f'import sys, time\nsys.path.insert(0, {str(ROOT)!r})\nimport {module}\n{settings}\n'
             f'{module}.input_file = {str(text_file)!r}\n{module}.num_chars = 20\n'
             f"{module}.checkpoint = {str(tmp_path / 'model.pt')!r}",
             f'{module}.main()',
             f"{module}.main(['--seed=7', '--checkpoint={tmp_path / 'other.pt'}'])",
             f'{module}.main()']
    if script == 'gpt.py':  # (bigram.py has no time budget)
        cells.append(textwrap.dedent('''\
            time.sleep(3)  # a call long after the import still has its whole budget
            print('budget from the call:', time.time() - gpt.start([]) < 1)'''))
    setup, first, other, again, *budget = run_cells(cells, tmp_path)
    assert setup == '', setup
    for out in (first, other, again):
        assert 'Error' not in out and 'for a known name' not in out, out
        final_losses(out)
    assert ' seed=7 ' in other and ' seed=1337 ' in again  # the call's settings ended with it
    assert (tmp_path / 'other.pt').is_file()
    assert (tmp_path / 'other.csv').is_file() == (script == 'gpt.py')  # (its log beside it: 'auto' again)
    assert budget in ([], ['budget from the call: True\n']), budget


def test_main_called_from_another_thread(text_file, tmp_path):
    # an app's worker thread (Gradio, Streamlit), where Python lets only the main thread set signal handlers:
    # Ctrl-C is the app's there, and the run trains all the same
    import subprocess, sys
    args = [f'--input_file={text_file}', f'--checkpoint={tmp_path / "m.pt"}', '--device=cpu', *TINY['gpt.py']]
    code = (f'import sys, threading; sys.path.insert(0, {str(ROOT)!r}); import gpt; '
            f'worker = threading.Thread(target=gpt.main, args=({args!r},)); worker.start(); worker.join()')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == '', out.stderr
    final_losses(out.stdout)


def test_attention_trick_pasted_into_a_cell_ends_without_an_exit(tmp_path):
    # all checks passed: nothing for a notebook to report (an exit, even 0, is an error there)
    out, = run_cells([(ROOT / 'attention_trick.py').read_text(encoding='utf-8')], tmp_path)
    assert out.rstrip().endswith('all checks passed') and 'SystemExit' not in out, out
