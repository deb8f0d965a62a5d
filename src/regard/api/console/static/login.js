// The console's sign-in: sign POST /console/session with the access key (sigv4.js) and let the
// server set the session cookie. The secret is read from the form, used to sign, and cleared.
"use strict";

(function () {
  const form = document.getElementById("login");
  const box = document.getElementById("login-error");

  function fail(message) {
    box.hidden = false;
    box.textContent = "";
    const p = document.createElement("p");
    p.textContent = message;
    box.appendChild(p);
    box.focus();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!window.isSecureContext || !window.crypto || !crypto.subtle) {
      fail("This page is not a secure context: open the console over HTTPS or on a loopback address.");
      return;
    }
    const accessKeyId = form.elements.akid.value.trim();
    const secretField = form.elements.secret;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const path = "/console/session";
      const headers = await window.regardSigV4.sign({
        method: "POST",
        path,
        body: "",
        host: window.location.host,
        region: form.dataset.region,
        service: "rekognition",
        accessKeyId,
        secret: secretField.value,
      });
      secretField.value = "";
      const response = await fetch(path, { method: "POST", headers, body: "", credentials: "same-origin" });
      if (response.ok) {
        const answer = await response.json();
        window.location.assign(answer.next || "/console");
        return;
      }
      let message = `Sign-in refused (HTTP ${response.status}).`;
      try {
        const answer = await response.json();
        if (answer.message) message = `Sign-in refused: ${answer.message}`;
      } catch (_) {
        // not JSON: keep the status
      }
      fail(message);
    } catch (error) {
      fail(`Sign-in failed: ${error}`);
    } finally {
      button.disabled = false;
    }
  });
})();
