/*
 * The playground: a multi-turn chat that streams through POST /playground/chat.
 *
 * The page's session and CSRF token authenticate the call (no API key in the browser); the
 * server answers with the same server-sent events as /v1/chat/completions with stream=true.
 * Model output is only ever put into the page as text nodes, never as HTML: answers go through
 * static/js/markdown.js, which builds elements with textContent. Each answer shows its tokens
 * and time to first token; "View code" shows the conversation as curl, Python, JavaScript and
 * Anthropic SDK calls with the user's key prefix.
 */
(function () {
  "use strict";

  var form = document.getElementById("playground");
  if (!form) { return; }

  var log = document.getElementById("pg-log");
  var empty = document.getElementById("pg-empty");
  var errorBox = document.getElementById("pg-error");
  var message = document.getElementById("pg-message");
  var system = document.getElementById("pg-system");
  var model = document.getElementById("pg-model");
  var maxTokens = document.getElementById("pg-max-tokens");
  var temperature = document.getElementById("pg-temperature");
  var send = document.getElementById("pg-send");
  var stop = document.getElementById("pg-stop");
  var clear = document.getElementById("pg-clear");
  var status = document.getElementById("pg-status");
  var csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  var modelId = document.getElementById("pg-model-id");
  var viewCode = document.getElementById("pg-view-code");
  var codePanel = document.getElementById("pg-code");
  var snippet = document.querySelector("#pg-code-snippet code");
  var lang = "curl";

  var history = [];
  var controller = null;

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.textContent = "";
    errorBox.hidden = true;
  }

  function bubble(role, text) {
    if (empty) { empty.hidden = true; }
    var item = document.createElement("div");
    item.className = "chat-msg " + role;
    var who = document.createElement("div");
    who.className = "chat-who";
    who.textContent = role === "user" ? "You" : "Assistant";
    var body = document.createElement("div");
    body.className = "chat-text" + (role === "assistant" ? " md" : "");
    if (role === "assistant") { body.appendChild(window.portal.renderMarkdown(text)); } else { body.textContent = text; }
    item.appendChild(who);
    item.appendChild(body);
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
    return body;
  }

  function showAnswer(body, text) {
    body.replaceChildren(window.portal.renderMarkdown(text));
  }

  function seconds(ms) { return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s"; }

  // "12 tokens · first token 0.31 s · 1.20 s in all" under an answer.
  function answerMeta(answer, usage, firstMs, totalMs) {
    var meta = document.createElement("div");
    meta.className = "chat-meta";
    var parts = [];
    if (usage) {
      parts.push(window.portal.count(usage.completion_tokens, "token"));
      meta.title = window.portal.count(usage.prompt_tokens, "prompt token") + ", "
        + window.portal.count(usage.completion_tokens, "completion token");
    }
    if (firstMs !== null) { parts.push("first token " + seconds(firstMs)); }
    parts.push(seconds(totalMs) + " in all");
    meta.textContent = parts.join(" · ");
    answer.parentNode.appendChild(meta);
  }

  function busy(on) {
    send.disabled = on;
    stop.hidden = !on;
    model.disabled = on;
  }

  function numberOrNull(input) {
    var value = input.value.trim();
    if (value === "") { return null; }
    var n = Number(value);
    return isFinite(n) ? n : NaN;
  }

  function errorText(payload, fallback) {
    if (payload && payload.error && payload.error.message) {
      return payload.error.message + (payload.error.code ? " (" + payload.error.code + ")" : "");
    }
    return fallback;
  }

  // Reads the event stream; calls onDelta(text) per content piece. Resolves with the usage
  // (or null), rejects with an Error carrying the server's message.
  function readStream(response, onDelta) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var usage = null;
    var finished = false;

    function handle(block) {
      var data = [];
      block.split(/\r?\n/).forEach(function (line) {
        if (line.indexOf("data:") === 0) { data.push(line.slice(5).replace(/^ /, "")); }
      });
      if (!data.length) { return; } // a comment (keep-alive)
      var text = data.join("\n");
      if (text === "[DONE]") { finished = true; return; }
      var chunk;
      try { chunk = JSON.parse(text); } catch (e) { return; }
      if (chunk.error) { throw new Error(errorText(chunk, "The answer broke off.")); }
      if (chunk.usage) { usage = chunk.usage; }
      var choice = chunk.choices && chunk.choices[0];
      if (choice && choice.delta && typeof choice.delta.content === "string" && choice.delta.content) {
        onDelta(choice.delta.content);
      }
    }

    function pump() {
      return reader.read().then(function (result) {
        if (result.done) {
          if (buffer.trim()) { handle(buffer); }
          if (!finished) { throw new Error("The connection closed before the answer was complete."); }
          return usage;
        }
        buffer += decoder.decode(result.value, { stream: true });
        var parts = buffer.split(/\r?\n\r?\n/);
        buffer = parts.pop();
        for (var i = 0; i < parts.length; i++) {
          handle(parts[i]);
          if (finished) { reader.cancel().catch(function () {}); return usage; }
        }
        return pump();
      });
    }
    return pump();
  }

  function submit() {
    var text = message.value.trim();
    if (!text || controller) { return; }
    clearError();
    var max = numberOrNull(maxTokens);
    var temp = numberOrNull(temperature);
    if (Number.isNaN(max) || (max !== null && (max < 1 || max > Number(maxTokens.max)))) {
      showError("Max tokens must be a whole number from 1 to " + maxTokens.max + ".");
      maxTokens.focus();
      return;
    }
    if (Number.isNaN(temp) || (temp !== null && (temp < 0 || temp > 2))) {
      showError("Temperature must be a number from 0 to 2.");
      temperature.focus();
      return;
    }

    var messages = [];
    if (system.value.trim()) { messages.push({ role: "system", content: system.value.trim() }); }
    messages = messages.concat(history, [{ role: "user", content: text }]);
    var userBubble = bubble("user", text);
    var answer = bubble("assistant", "");
    answer.parentNode.classList.add("streaming");
    message.value = "";
    var received = "";
    var started = performance.now();
    var firstMs = null;
    busy(true);
    status.textContent = "Waiting for the model…";
    controller = new AbortController();

    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, "Accept": "text/event-stream" },
      body: JSON.stringify({ model: model.value, messages: messages, max_tokens: max, temperature: temp }),
      signal: controller.signal
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (!response.ok || type.indexOf("text/event-stream") === -1) {
        return response.text().then(function (body) {
          var payload = null;
          try { payload = JSON.parse(body); } catch (e) { payload = null; }
          var fallback = response.status === 403
            ? "Your session expired or the page is stale: reload the page and try again."
            : "The request failed (HTTP " + response.status + ").";
          throw new Error(errorText(payload, fallback));
        });
      }
      status.textContent = "Streaming…";
      return readStream(response, function (piece) {
        if (firstMs === null) { firstMs = performance.now() - started; }
        received += piece;
        showAnswer(answer, received);
        log.scrollTop = log.scrollHeight;
      });
    }).then(function (usage) {
      history.push({ role: "user", content: text }, { role: "assistant", content: received });
      status.textContent = usage ? "Done · " + window.portal.count(usage.total_tokens, "token") : "Done";
      answerMeta(answer, usage, firstMs, performance.now() - started);
      window.portal.markScrollable();
      refreshCode();
    }).catch(function (error) {
      if (error.name === "AbortError") {
        status.textContent = "Stopped.";
        if (received) { history.push({ role: "user", content: text }, { role: "assistant", content: received }); }
        return;
      }
      status.textContent = "";
      if (!received) {
        // Nothing came back: take the turn back so the message can be sent again.
        userBubble.parentNode.remove();
        answer.parentNode.remove();
        message.value = text;
        if (empty && !log.querySelector(".chat-msg")) { empty.hidden = false; }
      } else {
        history.push({ role: "user", content: text }, { role: "assistant", content: received });
      }
      showError(error.message || "The request failed.");
    }).finally(function () {
      answer.parentNode && answer.parentNode.classList.remove("streaming");
      controller = null;
      busy(false);
      message.focus();
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    submit();
  });

  message.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    }
  });

  stop.addEventListener("click", function () {
    if (controller) { controller.abort(); }
  });

  clear.addEventListener("click", function () {
    if (controller) { controller.abort(); }
    history = [];
    Array.prototype.slice.call(log.querySelectorAll(".chat-msg")).forEach(function (node) { node.remove(); });
    if (empty) { empty.hidden = false; }
    clearError();
    status.textContent = "";
    message.focus();
  });

  model.addEventListener("change", function () {
    var option = model.options[model.selectedIndex];
    var limit = option.getAttribute("data-max-tokens");
    if (modelId) { modelId.textContent = model.value; }
    refreshCode();
    if (limit) {
      maxTokens.max = limit;
      if (Number(maxTokens.value) > Number(limit)) { maxTokens.value = limit; }
    }
  });

  // --- "View code" ------------------------------------------------------------------------
  function conversation() {
    var messages = [];
    if (system.value.trim()) { messages.push({ role: "system", content: system.value.trim() }); }
    messages = messages.concat(history);
    var draft = message.value.trim();
    // The message being typed is the next turn; with nothing typed and nothing said yet, an
    // example turn keeps the request valid.
    if (draft || !history.length) { messages.push({ role: "user", content: draft || "Hello!" }); }
    return messages;
  }

  function request() {
    var body = { model: model.value, messages: conversation() };
    var max = numberOrNull(maxTokens);
    var temp = numberOrNull(temperature);
    if (max !== null && !Number.isNaN(max)) { body.max_tokens = max; }
    if (temp !== null && !Number.isNaN(temp)) { body.temperature = temp; }
    return body;
  }

  function indent(text, spaces) {
    return text.split("\n").join("\n" + " ".repeat(spaces));
  }

  function code(which) {
    var base = form.getAttribute("data-base-url");
    var key = form.getAttribute("data-key");
    var body = request();
    var fromEnv = key.charAt(0) === "$";
    if (which === "curl") {
      var json = JSON.stringify(body, null, 2).replace(/'/g, "'\\''");
      return "curl " + base + "/chat/completions \\\n"
        + '  -H "Authorization: Bearer ' + key + '" \\\n'
        + '  -H "Content-Type: application/json" \\\n'
        + "  -d '" + json + "'";
    }
    if (which === "anthropic") { return anthropicCode(base, key, fromEnv, body); }
    var args = ["model=" + JSON.stringify(body.model),
                "messages=" + indent(JSON.stringify(body.messages, null, 4), 4)];
    if (body.max_tokens !== undefined) { args.push("max_tokens=" + body.max_tokens); }
    if (body.temperature !== undefined) { args.push("temperature=" + body.temperature); }
    if (which === "python") {
      return (fromEnv ? "import os\n\n" : "") + "from openai import OpenAI\n\n"
        + "client = OpenAI(base_url=" + JSON.stringify(base) + ", api_key="
        + (fromEnv ? 'os.environ["' + key.slice(1) + '"]' : JSON.stringify(key)) + ")\n"
        + "response = client.chat.completions.create(\n    " + args.join(",\n    ") + ",\n)\n"
        + "print(response.choices[0].message.content)";
    }
    return 'import OpenAI from "openai";\n\n'
      + "const client = new OpenAI({\n  baseURL: " + JSON.stringify(base) + ",\n  apiKey: "
      + (fromEnv ? "process.env." + key.slice(1) : JSON.stringify(key)) + ",\n});\n"
      + "const response = await client.chat.completions.create("
      + indent(JSON.stringify(body, null, 2), 0) + ");\n"
      + "console.log(response.choices[0].message.content);";
  }

  // Anthropic's Messages API on the same key: the SDK takes the site (it adds /v1/messages),
  // the system prompt is its own field, and max_tokens is required.
  function anthropicCode(base, key, fromEnv, body) {
    var site = base.replace(/\/v1$/, "");
    var turns = body.messages.filter(function (m) { return m.role !== "system"; });
    var systems = body.messages.filter(function (m) { return m.role === "system"; });
    var args = ["model=" + JSON.stringify(body.model),
                "max_tokens=" + (body.max_tokens !== undefined ? body.max_tokens : 1024)];
    if (systems.length) { args.push("system=" + JSON.stringify(systems[0].content)); }
    args.push("messages=" + indent(JSON.stringify(turns, null, 4), 4));
    if (body.temperature !== undefined) { args.push("temperature=" + Math.min(body.temperature, 1)); }
    return (fromEnv ? "import os\n\n" : "") + "import anthropic\n\n"
      + "client = anthropic.Anthropic(base_url=" + JSON.stringify(site) + ", api_key="
      + (fromEnv ? 'os.environ["' + key.slice(1) + '"]' : JSON.stringify(key)) + ")\n"
      + "message = client.messages.create(\n    " + args.join(",\n    ") + ",\n)\n"
      + "print(message.content[0].text)";
  }

  function refreshCode() {
    if (!codePanel || codePanel.hidden) { return; }
    snippet.textContent = code(lang);
    window.portal.markScrollable();
  }

  if (viewCode && codePanel) {
    viewCode.addEventListener("click", function () {
      var open = codePanel.hidden;
      codePanel.hidden = !open;
      viewCode.setAttribute("aria-expanded", String(open));
      viewCode.textContent = open ? "Hide code" : "View code";
      refreshCode();
    });
    codePanel.querySelectorAll("button[data-lang]").forEach(function (button) {
      button.addEventListener("click", function () {
        lang = button.getAttribute("data-lang");
        codePanel.querySelectorAll("button[data-lang]").forEach(function (other) {
          other.setAttribute("aria-pressed", String(other === button));
        });
        refreshCode();
      });
    });
    [system, message, maxTokens, temperature].forEach(function (input) {
      input.addEventListener("input", refreshCode);
    });
  }
})();
