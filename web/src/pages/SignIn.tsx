import { useState } from "preact/hooks";
import { type Session, signIn } from "../session";
import { ErrorBox } from "../ui";

export function SignIn({ onSignedIn }: { onSignedIn: (s: Session) => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  async function submit(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onSignedIn(await signIn(token.trim()));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }
  return (
    <main class="signin" id="main">
      <form class="signin-card" onSubmit={submit} aria-labelledby="signin-title">
        <div class="brand dark">
          <svg viewBox="0 0 32 32" width="36" height="36" aria-hidden="true">
            <rect width="32" height="32" rx="7" fill="#2563eb" />
            <path d="M9 8h14v6l-7 10-7-10z" fill="none" stroke="#fff" stroke-width="2.5" stroke-linejoin="round" />
            <path d="M9 14h14" stroke="#bfdbfe" stroke-width="2.5" />
          </svg>
          <span>Bulkhead</span>
        </div>
        <h1 id="signin-title">Sign in to the console</h1>
        <p class="sub">Use an API token. The demo prints an admin token when it starts; admins create more tokens for each team.</p>
        <label for="token">API token</label>
        <input
          id="token"
          name="token"
          type="password"
          autoComplete="off"
          spellcheck={false}
          placeholder="bh_…"
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          required
          autoFocus
        />
        {error ? <ErrorBox error={(error as { status?: number }).status === 401 ? new Error("That token is unknown, expired or revoked.") : error} /> : null}
        <button class="btn primary block" type="submit" disabled={busy || !token.trim()}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        <p class="fine">The token stays in this browser tab only (session storage) and is sent to this server alone.</p>
      </form>
    </main>
  );
}
