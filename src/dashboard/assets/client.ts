/// <reference lib="dom" />
/**
 * The console's browser script, served as `assets/console.js`: the source of
 * `consoleClient` is sent as it is, so it must stay self-contained (no
 * imports, nothing from this module's scope).
 *
 * - Times: `<time data-local>` in the viewer's zone, `<time data-ago>` as an age,
 *   the charts' bucket times (`data-at`) in the viewer's zone.
 * - Live: one EventSource on `api/events`; each snapshot refreshes the page's
 *   live region when it changed (`data-live="change"`) or every time (`tick`).
 * - Actions: `button[data-post]` confirms in a dialog (after fetching a count
 *   for bulk actions), POSTs with the CSRF token, reports the outcome.
 *   `form[data-post-form]` POSTs its inputs as JSON (empty → null, whole
 *   numbers of number inputs as numbers). While a `<details>` in the live
 *   region is open (a form being filled in), live refreshes wait; one
 *   already in flight when a form opens leaves the page as it is.
 */
export function consoleClient(keyOf: (queues: unknown) => string): void {
  const meta = (name: string): string => document.querySelector<HTMLMetaElement>(`meta[name="${name}"]`)?.content ?? '';
  const base = meta('pgq-base');
  const csrf = meta('pgq-csrf');
  const region = document.getElementById('live');
  const flashBox = document.getElementById('flash');
  const status = document.getElementById('live-status');
  const dialog = document.getElementById('confirm') as HTMLDialogElement | null;

  function ago(seconds: number): string {
    const s = Math.abs(seconds);
    const text = s < 1 ? 'now' : s < 90 ? `${Math.round(s)}s` : s < 5_400 ? `${Math.round(s / 60)}m` : s < 172_800 ? `${Math.round(s / 3_600)}h` : `${Math.round(s / 86_400)}d`;
    if (text === 'now') return 'just now';
    return seconds >= 0 ? `${text} ago` : `in ${text}`;
  }

  function formatTimes(root: ParentNode): void {
    root.querySelectorAll<HTMLTimeElement>('time[data-local]').forEach((el) => {
      const d = new Date(el.dateTime);
      el.textContent = d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
      el.title = `${el.dateTime} (${Intl.DateTimeFormat().resolvedOptions().timeZone})`;
    });
    root.querySelectorAll<HTMLTimeElement>('time[data-ago]').forEach((el) => {
      el.textContent = ago((Date.now() - new Date(el.dateTime).getTime()) / 1000);
      el.title = new Date(el.dateTime).toLocaleString();
    });
    // Ages as they were when the page was made (on the database's clock), moved on by this page's own clock since.
    root.querySelectorAll<HTMLElement>('[data-age]').forEach((el) => {
      el.dataset.seenAt ??= String(Date.now());
      const text = ago(Number(el.dataset.age) + (Date.now() - Number(el.dataset.seenAt)) / 1000);
      el.textContent = el.dataset.bare === undefined ? text : text.replace(' ago', '');
    });
    // The charts' bucket times (sent in UTC): hours and minutes, with the date for the day's range.
    root.querySelectorAll<SVGElement>('[data-at]').forEach((el) => {
      const d = new Date(el.dataset.at ?? '');
      if (Number.isNaN(d.getTime())) return;
      const hm = d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
      const text = el.dataset.range === 'day' ? `${d.toLocaleDateString(undefined, { month: 'short', day: 'numeric' })} ${hm}` : hm;
      el.textContent = `${text}${el.dataset.rest ?? ''}`;
    });
  }

  let flashTimer: number | undefined;
  function flash(text: string, tone: 'ok' | 'error'): void {
    if (!flashBox) return;
    flashBox.textContent = text;
    flashBox.className = `show ${tone}`;
    window.clearTimeout(flashTimer);
    flashTimer = window.setTimeout(() => (flashBox.className = ''), 8_000);
  }

  // A refresh asked for while one runs, or while the viewer is busy (a
  // dialog, an open form), is not dropped: it runs once that is over.
  let refreshing = false;
  let stale = false;
  let refreshedAt = Date.now();
  async function refresh(): Promise<void> {
    if (!region) return;
    if (refreshing || document.hidden || dialog?.open || region.querySelector('details[open]')) {
      stale = true;
      return;
    }
    refreshing = true;
    stale = false;
    refreshedAt = Date.now();
    try {
      const res = await fetch(location.href, { headers: { 'X-Pgq-Fragment': '1' } });
      const fragment = res.ok ? await res.text() : null;
      if (fragment !== null && (dialog?.open || region.querySelector('details[open]'))) {
        // A form opened (or a dialog) while this refresh was in flight: keep it; refresh once it closes.
        stale = true;
      } else if (fragment !== null) {
        region.innerHTML = fragment;
        formatTimes(region);
      }
    } finally {
      refreshing = false;
      if (stale) void refresh();
    }
  }
  const refreshIfStale = (): void => {
    if (stale) void refresh();
  };
  document.addEventListener('toggle', refreshIfStale, true);
  document.addEventListener('visibilitychange', refreshIfStale);
  dialog?.addEventListener('close', refreshIfStale);

  function ask(message: string): Promise<boolean> {
    if (!dialog) return Promise.resolve(window.confirm(message));
    dialog.querySelector('.message')!.textContent = message;
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
      dialog.returnValue = '';
      dialog.showModal();
    });
  }

  function describe(body: unknown): string {
    const b = body as { action?: string; count?: number; deleted?: boolean; state?: string; id?: string; paused?: boolean; name?: string; cancelRequestedAt?: string | null } | null;
    if (b && typeof b.count === 'number' && b.action) {
      const verb = b.action === 'retry' ? 'Retried' : b.action === 'cancel' ? 'Cancelled' : 'Deleted';
      return `${verb} ${b.count} job${b.count === 1 ? '' : 's'}.`;
    }
    if (b?.deleted) return 'Deleted.';
    if (b && typeof b.paused === 'boolean' && b.name && 'concurrency' in b) return `Queue ${b.name} is ${b.paused ? 'paused' : 'active'}.`;
    if (b && typeof b.paused === 'boolean' && b.name) return `Schedule ${b.name} is ${b.paused ? 'paused' : 'active'}.`;
    if (b?.id && b.state === 'running' && b.cancelRequestedAt) return `Job ${b.id} is cancelling: it ends cancelled once its handler has settled.`;
    if (b?.id && b.state) return `Job ${b.id} is ${b.state}.`;
    return 'Done.';
  }

  async function act(button: HTMLButtonElement): Promise<void> {
    let message = button.dataset.confirm ?? '';
    if (button.dataset.count) {
      const res = await fetch(button.dataset.count);
      const body = (await res.json()) as { count?: number; more?: boolean; error?: { message: string } };
      if (!res.ok) return flash(body.error?.message ?? `Request failed (${res.status})`, 'error');
      if (!body.count) return flash('No jobs match, so there is nothing to do.', 'ok');
      message = message.replace('{count}', body.more ? `more than ${body.count.toLocaleString()}` : body.count.toLocaleString());
    }
    if (message && !(await ask(message))) return;
    button.disabled = true;
    try {
      const res = await fetch(button.dataset.post!, { method: 'POST', headers: { 'X-Pgq-Csrf': csrf, 'Content-Type': 'application/json' }, body: '{}' });
      const body = (await res.json().catch(() => null)) as { error?: { message: string } } | null;
      if (!res.ok) return flash(body?.error?.message ?? `Request failed (${res.status})`, 'error');
      flash(describe(body), 'ok');
      if (button.dataset.after) location.href = button.dataset.after;
      else await refresh();
    } finally {
      button.disabled = false;
    }
  }

  async function submitForm(form: HTMLFormElement): Promise<void> {
    const body: Record<string, string | number | null> = {};
    form.querySelectorAll<HTMLInputElement>('input[name]').forEach((input) => {
      const value = input.value.trim();
      body[input.name] = value === '' ? null : input.type === 'number' && /^\d+$/.test(value) ? Number(value) : value;
    });
    const button = form.querySelector<HTMLButtonElement>('button[type=submit]');
    if (button) button.disabled = true;
    try {
      const res = await fetch(form.dataset.postForm!, { method: 'POST', headers: { 'X-Pgq-Csrf': csrf, 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      const answer = (await res.json().catch(() => null)) as { error?: { message: string }; name?: string } | null;
      if (!res.ok) return flash(answer?.error?.message ?? `Request failed (${res.status})`, 'error');
      flash(answer?.name ? `Limits of ${answer.name} saved.` : 'Saved.', 'ok');
      form.closest('details')?.removeAttribute('open');
      await refresh();
    } finally {
      if (button) button.disabled = false;
    }
  }

  document.addEventListener('submit', (event) => {
    const form = (event.target as Element | null)?.closest<HTMLFormElement>('form[data-post-form]');
    if (!form) return;
    event.preventDefault();
    submitForm(form).catch((err: unknown) => flash(String(err), 'error'));
  });

  document.addEventListener('click', (event) => {
    const button = (event.target as Element | null)?.closest<HTMLButtonElement>('button[data-post]');
    if (!button) return;
    event.preventDefault();
    act(button).catch((err: unknown) => flash(String(err), 'error'));
  });

  formatTimes(document);
  window.setInterval(() => formatTimes(document), 5_000);

  const mode = region?.dataset.live ?? 'none';
  // The snapshot the page was drawn from, or the newest read before it ('' when
  // there was none): the stream's first snapshot is news when it differs (a
  // page drawn from a snapshot read just before a change kept it until the
  // 30 s refresh).
  let lastKey: string | null = region?.dataset.key ?? null;
  const events = new EventSource(`${base}/api/events`);
  events.addEventListener('snapshot', (event) => {
    if (status) {
      status.textContent = 'live';
      status.className = 'pill live-dot on';
    }
    const snapshot = JSON.parse((event as MessageEvent<string>).data) as { queues: unknown };
    const key = keyOf(snapshot.queues);
    const changed = lastKey !== null && key !== lastKey;
    lastKey = key;
    // Unchanged counts still move the charts on to new minutes: a refresh at least every 30 s.
    if (mode === 'tick' || (mode === 'change' && (changed || Date.now() - refreshedAt > 30_000))) void refresh();
  });
  events.addEventListener('error', () => {
    if (status) {
      status.textContent = 'reconnecting…';
      status.className = 'pill live-dot off';
    }
  });
}

/**
 * A short key of a snapshot's queues, the same in the browser (from the
 * snapshot's JSON) and on the server (from the snapshot a page was drawn
 * beside): FNV-1a of their JSON text. Sent to the browser as source, so
 * self-contained like `consoleClient`.
 */
export function liveKey(queues: unknown): string {
  const text = JSON.stringify(queues);
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return `${(hash >>> 0).toString(16)}:${text.length}`;
}
