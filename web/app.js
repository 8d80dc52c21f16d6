// Parley's chat page. Plain ES modules, no build step: app/session.js (sign-in, tokens, servers),
// app/chat.js (the client, rooms, people, composer), app/timeline.js (the message list),
// app/dom.js (helpers). The protocol and the client library: docs/protocol.md, docs/client.md.
import { $ } from './app/dom.js';
import { saved, serverList, devToken, userIdProblem, Tokens } from './app/session.js';
import { ChatApp } from './app/chat.js';

const view = { signin: $('signin-view'), form: $('signin-form'), name: $('signin-name'), error: $('signin-error'), submit: $('signin-submit') };

/** Signed in: the chat takes over the page. */
function startChat(user, first) {
  view.signin.hidden = true;
  const app = new ChatApp({
    user,
    tokens: new Tokens(user, first),
    servers: serverList(),
    // A clean slate: no listener, timer or socket of the old session survives.
    onSignOut: () => location.replace(location.pathname + location.search),
  });
  globalThis.parleyApp = app; // for the console and the browser test
  app.start().catch((err) => {
    console.error(err);
    app.toast(`Something went wrong: ${err.message}`, 'error');
  });
}

async function signIn(name, { auto = false } = {}) {
  view.error.textContent = '';
  const problem = userIdProblem(name);
  if (problem) {
    view.error.textContent = problem;
    view.name.setAttribute('aria-invalid', 'true');
    view.name.focus();
    return;
  }
  view.name.removeAttribute('aria-invalid');
  view.submit.disabled = true;
  view.submit.textContent = 'Signing in…';
  try {
    const first = await devToken(name);
    saved.user = first.user;
    startChat(first.user, first);
  } catch (err) {
    view.signin.hidden = false;
    view.error.textContent = err.message;
    if (err.code === 'bad_name') view.name.setAttribute('aria-invalid', 'true');
    if (!auto) view.name.focus();
  } finally {
    view.submit.disabled = false;
    view.submit.textContent = 'Sign in';
  }
}

view.form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  signIn(view.name.value.trim());
});
view.name.addEventListener('input', () => {
  view.error.textContent = '';
  view.name.removeAttribute('aria-invalid');
});

// A reload signs in again as the same user (per tab: two tabs can be two people).
const remembered = saved.user;
if (remembered) {
  view.name.value = remembered;
  signIn(remembered, { auto: true });
} else {
  view.signin.hidden = false;
  view.name.focus();
}
