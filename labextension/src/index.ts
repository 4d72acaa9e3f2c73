import { ILabShell, ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';
import { IDisposable } from '@lumino/disposable';

import { AnvilApi } from './api';
import { AnvilController } from './controller';
import { AnvilPanel } from './panel';
import { toggleServerTag, TaggableCell } from './tags';
import { AppStateItem } from './toolbar';

const anvilSvg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">
<path class="jp-icon3" fill="#616161" d="M3 7h13c0 2.2 1.8 4 4 4h1v2h-3.2c-1 0-1.8.8-1.8 1.8V16l2 3H6l2-3v-1.2C8 13.8 7.2 13 6.2 13H5c-1.1 0-2-.9-2-2V7z"/>
</svg>`;

export const anvilIcon = new LabIcon({ name: 'jupyter-anvil:anvil', svgstr: anvilSvg });

export const COMMAND_TOGGLE_SERVER_TAG = 'jupyter-anvil:toggle-server-tag';
export const COMMAND_OPEN_PANEL = 'jupyter-anvil:open-panel';

class ToolbarExtension implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel> {
  constructor(private controller: AnvilController) {}

  createNew(panel: NotebookPanel): IDisposable {
    const item = new AppStateItem(this.controller.model, panel);
    panel.toolbar.insertItem(10, 'anvilAppState', item);
    return item;
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-anvil:plugin',
  description: 'The Anvil panel: apps, tasks, schedules, mail, environments and logs, live.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILayoutRestorer, ICommandPalette, ILabShell],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null
  ) => {
    const settings = app.serviceManager.serverSettings;
    const controller = new AnvilController(new AnvilApi(settings), settings.token);

    const openNotebook = (path: string, cell: number | null) => {
      void app.commands.execute('docmanager:open', { path }).then(async (widget: unknown) => {
        if (cell === null || !(widget instanceof NotebookPanel)) {
          return;
        }
        await widget.context.ready;
        await widget.revealed;
        const notebook = widget.content;
        if (cell >= 0 && cell < notebook.widgets.length) {
          notebook.activeCellIndex = cell;
          await notebook.scrollToCell(notebook.widgets[cell], 'center');
        }
      });
    };

    const panel = new AnvilPanel(controller, { openNotebook });
    panel.id = 'jupyter-anvil-panel';
    panel.title.icon = anvilIcon;
    panel.title.caption = 'Anvil';
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, 'jupyter-anvil-panel');

    app.commands.addCommand(COMMAND_OPEN_PANEL, {
      label: 'Show the Anvil panel',
      execute: () => app.shell.activateById(panel.id)
    });

    app.commands.addCommand(COMMAND_TOGGLE_SERVER_TAG, {
      label: 'Toggle server tag',
      caption: 'Add or remove the "server" tag of the selected cells (their code becomes the app\'s server module)',
      isEnabled: () => tracker.currentWidget !== null,
      execute: () => {
        const current = tracker.currentWidget;
        if (!current) {
          return;
        }
        const notebook = current.content;
        const cells = notebook.widgets.filter(cell => notebook.isSelectedOrActive(cell));
        toggleServerTag(cells.map(cell => cell.model as unknown as TaggableCell));
      }
    });
    palette?.addItem({ command: COMMAND_TOGGLE_SERVER_TAG, category: 'Anvil' });
    palette?.addItem({ command: COMMAND_OPEN_PANEL, category: 'Anvil' });

    app.docRegistry.addWidgetExtension('Notebook', new ToolbarExtension(controller));

    // The toolbar items need the apps' states while the panel (and its feed) is hidden:
    // a light poll of anvil/api/apps while a notebook is open and the page is visible.
    const poll = async () => {
      if (!controller.feedRunning && tracker.size > 0 && document.visibilityState === 'visible') {
        try {
          const apps = await controller.api.apps();
          controller.model.setApps(apps.apps, apps.problems, apps.message ?? null);
        } catch {
          // the panel's banner shows server errors; a toolbar badge just keeps its last state
        }
      }
    };
    setInterval(() => void poll(), 3000);
    tracker.widgetAdded.connect(() => void poll());
  }
};

export default plugin;
