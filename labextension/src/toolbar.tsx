// The notebook toolbar item of an app notebook: the app's state, its error on hover and
// on click, and a link to the app's page. Nothing is shown on a notebook that is no app.
import { showDialog, Dialog } from '@jupyterlab/apputils';
import { NotebookPanel } from '@jupyterlab/notebook';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { AnvilModel } from './model';

export class AppStateItem extends ReactWidget {
  private dispose_: () => void;

  constructor(
    private model: AnvilModel,
    private panel: NotebookPanel
  ) {
    super();
    this.addClass('jp-Anvil-toolbarItem');
    this.dispose_ = model.onChange(() => this.update());
    panel.context.pathChanged.connect(() => this.update());
  }

  dispose(): void {
    this.dispose_();
    super.dispose();
  }

  render(): JSX.Element {
    const app = this.model.appForNotebook(this.panel.context.path);
    if (!app) {
      return <span />;
    }
    const showError = () => {
      if (app.error) {
        void showDialog({
          title: `${app.name}: ${app.status}`,
          body: <pre className="jp-Anvil-dialogError">{app.error}</pre>,
          buttons: [Dialog.okButton()]
        });
      }
    };
    return (
      <span className="jp-Anvil-toolbarApp" data-app={app.name}>
        <span
          className={`jp-Anvil-badge jp-Anvil-status-${app.status} ${app.error ? 'jp-Anvil-clickable' : ''}`}
          title={app.error ?? `app ${app.name}: ${app.status}`}
          onClick={showError}
        >
          Anvil app {app.status}
        </span>
        <a className="jp-Anvil-link" href={app.url} target="_blank" rel="noopener noreferrer" title="Open the app's page">
          open ↗
        </a>
      </span>
    );
  }
}
