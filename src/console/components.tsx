/** Small building blocks shared by the pages: error banners, tabs, dialogs, async state. */
import type { ComponentChildren } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, asApiError } from './api';

/** An API error shown plainly: its name and AWS's message. */
export function ErrorBanner({ error }: { error: ApiError | undefined }) {
  if (!error) return null;
  return (
    <div class="error" role="alert">
      <strong>{error.type}</strong>: {error.message}
    </div>
  );
}

export function Notice({ text }: { text: string | undefined }) {
  return text ? (
    <div class="notice" role="status">
      {text}
    </div>
  ) : null;
}

/** Runs an async loader, keeping its result, error and a reload function. */
export function useAsync<T>(load: () => Promise<T>, deps: unknown[]): { value?: T; error?: ApiError; loading: boolean; reload: () => void } {
  const [state, setState] = useState<{ value?: T; error?: ApiError; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (value) => live && setState({ value, loading: false }),
      (e: unknown) => live && setState({ error: asApiError(e), loading: false }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  return { ...state, reload: useCallback(() => setTick((t) => t + 1), []) };
}

/** A button that runs an action and reports its error (or success text) next to it. */
export function useAction(): { run: (action: () => Promise<unknown>, done?: string) => Promise<boolean>; error?: ApiError; notice?: string; busy: boolean } {
  const [error, setError] = useState<ApiError>();
  const [notice, setNotice] = useState<string>();
  const [busy, setBusy] = useState(false);
  const run = async (action: () => Promise<unknown>, done?: string) => {
    setBusy(true);
    setError(undefined);
    setNotice(undefined);
    try {
      await action();
      setNotice(done);
      return true;
    } catch (e) {
      setError(asApiError(e));
      return false;
    } finally {
      setBusy(false);
    }
  };
  return { run, error, notice, busy };
}

export function Tabs({ tabs, active, onSelect }: { tabs: { id: string; label: string }[]; active: string; onSelect: (id: string) => void }) {
  return (
    <div class="tabs" role="tablist" aria-label="Key details">
      {tabs.map((t) => (
        <button
          key={t.id}
          type="button"
          role="tab"
          id={`tab-${t.id}`}
          aria-selected={t.id === active}
          aria-controls={`panel-${t.id}`}
          tabIndex={t.id === active ? 0 : -1}
          class={t.id === active ? 'tab active' : 'tab'}
          onClick={() => onSelect(t.id)}
          onKeyDown={(e) => {
            const i = tabs.findIndex((x) => x.id === active);
            if (e.key === 'ArrowRight') onSelect(tabs[(i + 1) % tabs.length]!.id);
            if (e.key === 'ArrowLeft') onSelect(tabs[(i + tabs.length - 1) % tabs.length]!.id);
          }}
        >
          {t.label}
        </button>
      ))}
    </div>
  );
}

/** A modal dialog (the native <dialog>): focus moves into it and Escape closes it. */
export function Dialog({ title, open, onClose, children }: { title: string; open: boolean; onClose: () => void; children: ComponentChildren }) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const d = ref.current;
    if (!d) return;
    if (open && !d.open) d.showModal();
    if (!open && d.open) d.close();
  }, [open]);
  return (
    <dialog ref={ref} aria-labelledby="dialog-title" onClose={onClose} onCancel={onClose}>
      <h2 id="dialog-title">{title}</h2>
      {children}
    </dialog>
  );
}

export function Field({ id, label, children }: { id: string; label: string; children: ComponentChildren }) {
  return (
    <div class="field">
      <label for={id}>{label}</label>
      {children}
    </div>
  );
}

export const when = (d: Date | string | undefined) => (d ? new Date(d).toISOString().replace('T', ' ').slice(0, 19) + 'Z' : '');
