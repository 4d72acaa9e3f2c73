// The notes app's page: works offline. It shows its own copy of the notes (kept in
// IndexedDB by localStore), sends every change as a queued call (kept until the server
// can be reached, then run exactly once), and loads the server's notes when it can.
import {server, AppOfflineError, localStore} from "../../client.js";

const $ = (id) => document.getElementById(id);
const notes = localStore("notes"); // id -> {id, text, done, updated, synced}

// -- showing ------------------------------------------------------------------------
async function render() {
  const list = [];
  for (const id of await notes.keys()) list.push(await notes.get(id));
  list.sort((a, b) => b.updated - a.updated);
  $("notes").replaceChildren(...list.map(noteItem));
  $("empty").hidden = list.length > 0;
}

function noteItem(note) {
  const item = document.createElement("li");
  item.dataset.id = note.id;
  item.classList.toggle("done", note.done);
  const done = document.createElement("input");
  done.type = "checkbox";
  done.checked = note.done;
  done.setAttribute("aria-label", `Done: ${note.text}`);
  done.addEventListener("change", () => change({...note, done: done.checked}));
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = note.text;
  item.append(done, text);
  if (!note.synced) {
    const mark = document.createElement("span");
    mark.className = "unsynced";
    mark.textContent = "not synced";
    item.append(mark);
  }
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", `Delete ${note.text}`);
  remove.addEventListener("click", () => removeNote(note));
  item.append(remove);
  return item;
}

async function showWaiting() {
  const waiting = (await server.queuedCalls()).length;
  $("waiting").textContent = waiting === 0 ? "" : `${waiting} change${waiting === 1 ? "" : "s"} waiting to sync`;
}

function showOnline(online) {
  $("status").textContent = online ? "online" : "offline";
  $("status").className = `status ${online ? "online" : "offline"}`;
}

function showError(error) {
  $("error").textContent = error ? error.message || String(error) : "";
}

// -- changing: the page's copy at once, the server's through the queue ---------------
const followed = new Set(); // ids of queued calls whose outcome this page waits for

/** Wait for a queued call's outcome (also one queued before a reload). */
function follow(call) {
  if (followed.has(call.id)) return;
  followed.add(call.id);
  call.result
    .then(async (value) => {
      // save_note answers with the note as stored (the newest change wins there)
      if (value && typeof value === "object" && typeof value.id === "string") {
        if ((await notes.get(value.id)) !== undefined) await notes.set(value.id, {...value, synced: true});
      }
    })
    .catch((error) => {
      if (error.type !== "anvil.server.AppOfflineError") showError(error); // e.g. a ValueError
    })
    .finally(async () => {
      followed.delete(call.id);
      await render();
      await showWaiting();
    });
}

async function send(name, ...args) {
  const call = await server.callQueued(name, ...args);
  follow(call);
  await showWaiting();
}

async function change(note) {
  showError(null);
  const updated = {id: note.id, text: note.text, done: note.done, updated: new Date()};
  await notes.set(updated.id, {...updated, synced: false});
  await render();
  await send("save_note", updated);
}

async function removeNote(note) {
  showError(null);
  await notes.delete(note.id);
  await render();
  await send("delete_note", note.id, new Date());
}

$("add-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  await change({id: crypto.randomUUID(), text, done: false});
});

// -- the server's notes, when it can be reached --------------------------------------
async function loadFromServer() {
  if ((await server.queuedCalls()).length > 0) return; // our own changes go first
  try {
    const stored = await server.call("list_notes");
    await notes.clear();
    for (const note of stored) await notes.set(note.id, {...note, synced: true});
    await render();
  } catch (error) {
    if (!(error instanceof AppOfflineError)) showError(error);
  }
}

// -- start ----------------------------------------------------------------------------
server.on("offline", () => showOnline(false));
server.on("online", async () => {
  showOnline(true);
  await showWaiting();
});
server.on("queue", async (waiting) => {
  await showWaiting();
  if (waiting === 0) await loadFromServer();
});

await render(); // the page's own copy first: shown at once, offline too
for (const call of await server.queuedCalls()) follow(call); // queued before a reload
await showWaiting();
try {
  await server.enableOffline();
  $("offline-mode").textContent = "This page works offline.";
} catch (error) {
  $("offline-mode").textContent = `This page cannot work offline here: ${error.message}`;
}
showOnline(await server.isAppOnline());
await loadFromServer();
