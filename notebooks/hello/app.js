// The hello app's page. The page lives at {base}anvil/apps/hello/, so the client is
// two folders up; relative URLs keep it working under any base_url.
import {server, kwargs} from "../../client.js";

const $ = (id) => document.getElementById(id);

/** Run `action` for a form's submit, showing an error in `errorBox` if it fails. */
function onSubmit(formId, errorBox, action) {
  $(formId).addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = event.target.querySelector("button");
    $(errorBox).textContent = "";
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      // error.type is the Python exception's name (e.g. "ValueError").
      $(errorBox).textContent = error.message || String(error);
    } finally {
      button.disabled = false;
    }
  });
}

// server.session: the server counts this tab's visits. server.cookies.local: the name
// to greet you with, kept in this browser (the page never sees the cookie itself).
let remembered = null; // the name the server remembers for this browser, if any

async function welcome() {
  $("session-error").textContent = "";
  try {
    const {visits, name} = await server.call("welcome");
    $("visits").textContent = String(visits);
    $("welcome-back").textContent = name ? `Welcome back, ${name}!` : "";
    remembered = name ?? null;
    $("remember").checked = Boolean(name);
    if (name) $("name").value ||= name;
  } catch (error) {
    $("session-error").textContent = error.message || String(error);
  }
}

// A session expires after a while without calls; then every call fails with an
// AnvilError of type "anvil.server.SessionExpiredError" until a new session starts.
server.onSessionExpired(() => {
  $("visits").textContent = "…";
  $("session-error").textContent = "This session has expired: start a new one.";
});

$("new-session").addEventListener("click", async () => {
  server.resetSession();
  await welcome();
});

welcome();

onSubmit("greet-form", "error", async () => {
  $("greeting").textContent = "";
  const name = $("name").value.trim();
  const greeting = $("excited").checked
    ? await server.call("shout", `Hello, ${name}`, kwargs({excited: true}))
    : await server.call("greet", name);
  $("greeting").textContent = greeting;
  const wanted = $("remember").checked && name ? name : null;
  if (wanted !== remembered) {
    await server.call("remember", wanted ?? "");
    remembered = wanted;
  }
});

// A datetime-local value is local wall time ("2024-02-28T09:30"); new Date() reads
// it as such, and the client sends it with this browser's UTC offset.
onSubmit("date-form", "date-error", async () => {
  $("next-day-result").textContent = "";
  if (!$("when").value) throw new Error("Please pick a date and time");
  const next = await server.call("next_day", new Date($("when").value));
  const shown = next.toLocaleString(undefined, {dateStyle: "full", timeStyle: "short"});
  $("next-day-result").textContent = shown;
  $("next-day-result").dataset.iso = next.toISOString();
});

onSubmit("file-form", "file-error", async () => {
  $("file-result").textContent = "";
  const file = $("file").files[0];
  if (!file) throw new Error("Please choose a file");
  const copy = await server.call("echo_media", file);
  const link = document.createElement("a");
  link.href = URL.createObjectURL(copy);
  link.download = copy.name ?? "download";
  link.textContent = `${copy.name ?? "(no name)"}: ${copy.size} bytes, ${copy.type || "no type"}`;
  $("file-result").replaceChildren("Back from the server: ", link);
});

// A background task: start_counting launches count_words on the server and returns its
// Task. The page asks the Task for the task's state (its server.task_state) a few times a
// second to move the progress bar, until the task has completed; isCompleted() rejects
// if it failed or was killed, and the error shows like any other.
const POLL_MS = 300;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function showProgress({done = 0, total = 0} = {}) {
  const bar = $("progress");
  bar.max = Math.max(total, 1);
  bar.value = Math.min(done, bar.max);
  $("task-status").textContent = total ? `${done} of ${total} words` : "starting…";
}

onSubmit("task-form", "task-error", async () => {
  $("task-result").textContent = "";
  showProgress();
  const task = await server.call("start_counting", $("words").value);
  while (!(await task.isCompleted())) {
    showProgress(await task.getState());
    await sleep(POLL_MS);
  }
  showProgress(await task.getState());
  const {words, distinct, top, finished} = await task.getReturnValue();
  const most = top.map(([word, n]) => `${word} (${n})`).join(", ");
  $("task-result").textContent =
    `${words} words, ${distinct} different; most used: ${most} (done at ${finished.toLocaleTimeString()})`;
});
