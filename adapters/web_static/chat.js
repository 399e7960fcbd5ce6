// The web chat page. Everything shown is built with textContent and createElement, never
// innerHTML: whatever the model or anyone else writes stays text. See adapters/web.py for the
// socket protocol.
(function () {
  "use strict";

  var STORAGE_KEY = "parley.conversation";
  var log = document.getElementById("log");
  var statusLine = document.getElementById("status");
  var form = document.getElementById("composer");
  var input = document.getElementById("input");
  var sendButton = document.getElementById("send");
  var humanButton = document.getElementById("human");
  var restartButton = document.getElementById("restart");
  var attach = document.getElementById("attach");
  var fileList = document.getElementById("files");

  var socket = null;
  var conversation = readStorage();
  var limit = Number(input.maxLength) > 0 ? Number(input.maxLength) : 4000;
  var greeting = "";
  var retries = 0;
  // Questions in flight: id -> {bubble, body, text, answered}
  var pending = new Map();
  // Files uploaded for the next question: {id, name}; uploads still running.
  var uploads = [];
  var uploading = 0;

  if (new URLSearchParams(location.search).has("embed")) {
    document.documentElement.classList.add("embed");
  }

  // -- storage (a sandboxed frame may refuse it: then each load starts afresh) --------------
  function readStorage() {
    try {
      return window.sessionStorage.getItem(STORAGE_KEY);
    } catch (error) {
      return null;
    }
  }

  function writeStorage(value) {
    try {
      window.sessionStorage.setItem(STORAGE_KEY, value);
    } catch (error) {
      // Not kept: a reload starts a new conversation.
    }
  }

  function randomId() {
    var bytes = new Uint8Array(12);
    window.crypto.getRandomValues(bytes);
    return Array.prototype.map
      .call(bytes, function (b) {
        return b.toString(16).padStart(2, "0");
      })
      .join("");
  }

  // -- the conversation on screen -----------------------------------------------------------
  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  function scrollDown(force) {
    if (force || nearBottom()) {
      log.scrollTop = log.scrollHeight;
    }
  }

  // An answer's HTML comes rendered by the server from its Markdown (markdown-it-py: raw HTML
  // escaped, only http(s) and mailto links, no images); the page never parses Markdown.
  function showHtml(body, html) {
    body.innerHTML = html || "";
  }

  function addMessage(role, text, failed, html) {
    var stick = nearBottom();
    var bubble = document.createElement("div");
    bubble.className = "message " + role + (failed ? " failed" : "");
    var label = document.createElement("span");
    label.className = "visually-hidden";
    label.textContent = role === "user" ? "You: " : "Assistant: ";
    var body = document.createElement("div");
    body.className = "body";
    bubble.appendChild(label);
    bubble.appendChild(body);
    if (html) {
      showHtml(body, html);
    } else {
      body.textContent = text;
    }
    log.appendChild(bubble);
    scrollDown(stick);
    return { bubble: bubble, body: body };
  }

  function addNote(text) {
    var stick = nearBottom();
    var note = document.createElement("p");
    note.className = "note";
    note.textContent = text;
    log.appendChild(note);
    scrollDown(stick);
  }

  function setStatus(text) {
    statusLine.textContent = text;
  }

  function setReady(ready) {
    input.disabled = !ready;
    sendButton.disabled = !ready;
    humanButton.disabled = !ready;
    restartButton.disabled = !ready;
    attach.disabled = !ready;
  }

  function answerBubble(entry) {
    if (!entry.bubble) {
      var shown = addMessage("assistant", "", false);
      entry.bubble = shown.bubble;
      entry.body = shown.body;
      entry.bubble.setAttribute("aria-busy", "true");
      entry.bubble.classList.add("waiting");
    }
    return entry;
  }

  function showText(entry) {
    var stick = nearBottom();
    answerBubble(entry);
    if (entry.text) {
      entry.bubble.classList.remove("waiting");
    }
    showHtml(entry.body, entry.html);
    scrollDown(stick);
  }

  function addRating(entry, replyId) {
    var row = document.createElement("div");
    row.className = "rate";
    [
      ["up", "👍", "Helpful"],
      ["down", "👎", "Not helpful"],
    ].forEach(function (choice) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = choice[1];
      button.setAttribute("aria-label", choice[2]);
      button.setAttribute("aria-pressed", "false");
      button.dataset.rating = choice[0];
      button.addEventListener("click", function () {
        send({ type: "rate", reply: replyId, rating: choice[0] });
      });
      row.appendChild(button);
    });
    row.dataset.reply = replyId;
    entry.bubble.appendChild(row);
  }

  // -- the socket ---------------------------------------------------------------------------
  function send(message) {
    if (socket === null || socket.readyState !== WebSocket.OPEN) {
      setStatus("Not connected yet; please try again in a moment.");
      return false;
    }
    socket.send(JSON.stringify(message));
    return true;
  }

  function ask(kind, text, shown) {
    var id = randomId();
    var message = { type: kind, id: id };
    if (kind === "ask") {
      message.text = text;
      message.files = uploads.map(function (file) {
        return file.id;
      });
    }
    if (!send(message)) {
      return false;
    }
    addMessage("user", shown, false);
    pending.set(id, answerBubble({ bubble: null, body: null, text: "" }));
    scrollDown(true);
    return true;
  }

  function onHello(message) {
    conversation = message.conversation;
    writeStorage(conversation);
    limit = message.limit;
    input.maxLength = limit;
    greeting =
      "Hi! I'm " + message.name + ", " + message.company + "'s support assistant. How can I help?";
    pending.clear();
    log.replaceChildren();
    if (!message.history.length) {
      addMessage("assistant", greeting, false);
    }
    message.history.forEach(function (turn) {
      addMessage(turn.role, turn.text, turn.status === "failed", turn.html);
    });
    if (message.notice) {
      addNote(message.notice);
    }
    scrollDown(true);
    setReady(true);
    setStatus("");
    if (!document.activeElement || document.activeElement === document.body) {
      input.focus();
    }
  }

  function finishEntry(entry) {
    if (entry.bubble) {
      entry.bubble.removeAttribute("aria-busy");
      entry.bubble.classList.remove("waiting");
    }
  }

  function onMessage(message) {
    var entry = message.id ? pending.get(message.id) : undefined;
    switch (message.type) {
      case "hello":
        onHello(message);
        break;
      case "start":
        if (entry) {
          answerBubble(entry);
        }
        break;
      case "text":
        if (entry) {
          entry.text = message.append !== undefined ? entry.text + message.append : message.text;
          entry.html = message.html;
          showText(entry);
        }
        break;
      case "final":
        if (entry) {
          entry.text = message.text;
          entry.html = message.html;
          entry.answered = true;
          showText(entry);
          if (message.failed) {
            entry.bubble.classList.add("failed");
          }
          finishEntry(entry);
        }
        break;
      case "notice":
        if (entry) {
          if (entry.bubble && !entry.answered) {
            entry.bubble.remove();
          }
          pending.delete(message.id);
        }
        addNote(message.text);
        break;
      case "done":
        if (entry) {
          pending.delete(message.id);
          if (!entry.answered && entry.bubble) {
            entry.bubble.remove();
            if (message.outcome === "handed_off") {
              addNote("Your message was passed on to our support team.");
            } else if (message.outcome === "rate_limited") {
              addNote("Please wait a moment before sending more.");
            }
          } else if (message.reply) {
            addRating(entry, message.reply);
          }
          finishEntry(entry);
        }
        break;
      case "rated":
        document.querySelectorAll(".rate").forEach(function (row) {
          if (row.dataset.reply !== message.reply) {
            return;
          }
          row.querySelectorAll("button").forEach(function (button) {
            var chosen = message.ok && button.dataset.rating === message.rating;
            button.setAttribute("aria-pressed", chosen ? "true" : "false");
          });
        });
        setStatus(message.ok ? "Thanks for the feedback." : "Sorry, that rating wasn't saved.");
        break;
      default:
        break;
    }
  }

  function connect() {
    var url = new URL("ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    url.search = "";
    if (conversation) {
      url.searchParams.set("conversation", conversation);
    }
    setStatus(retries ? "Reconnecting…" : "Connecting…");
    socket = new WebSocket(url.href);
    socket.addEventListener("open", function () {
      retries = 0;
    });
    socket.addEventListener("message", function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        return;
      }
      onMessage(message);
    });
    socket.addEventListener("close", function () {
      socket = null;
      setReady(false);
      pending.forEach(finishEntry);
      // Exponential backoff with jitter, at most about half a minute.
      var delay = Math.min(30000, 500 * Math.pow(2, retries)) * (0.5 + Math.random() / 2);
      retries += 1;
      setStatus("Connection lost; reconnecting…");
      window.setTimeout(connect, delay);
    });
  }

  // -- files: each posted to /upload at once, its id sent with the question -----------------
  function showUploads() {
    fileList.replaceChildren();
    uploads.forEach(function (file) {
      var item = document.createElement("li");
      item.textContent = "📎 " + file.name;
      if (file.notice) {
        item.className = "unread";
        item.title = file.notice;
      }
      fileList.appendChild(item);
    });
  }

  function upload(file) {
    var body = new FormData();
    body.append("file", file, file.name);
    uploading += 1;
    setStatus("Reading " + file.name + "…");
    return fetch("upload", { method: "POST", body: body, credentials: "same-origin" })
      .then(function (response) {
        return response.json().then(function (answer) {
          if (!response.ok) {
            throw new Error(answer.error || "The file could not be sent.");
          }
          uploads.push(answer);
          showUploads();
          setStatus(answer.notice || "");
        });
      })
      .catch(function (error) {
        setStatus(error.message || "The file could not be sent.");
      })
      .finally(function () {
        uploading -= 1;
      });
  }

  attach.addEventListener("change", function () {
    Array.prototype.forEach.call(attach.files, upload);
    attach.value = "";
    input.focus();
  });

  // -- input --------------------------------------------------------------------------------
  function grow() {
    input.style.height = "auto";
    input.style.height = input.scrollHeight + "px";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = input.value.trim();
    if (uploading) {
      setStatus("Still reading your file; send again in a moment.");
      return;
    }
    if (!text && !uploads.length) {
      return;
    }
    if (text.length > limit) {
      setStatus("Your message is longer than " + limit + " characters; please shorten it.");
      return;
    }
    var names = uploads.map(function (file) {
      return "📎 " + file.name;
    });
    if (ask("ask", text, [text].concat(names).filter(Boolean).join("\n"))) {
      uploads = [];
      showUploads();
      input.value = "";
      grow();
      setStatus("");
    }
    input.focus();
  });

  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener("input", grow);

  humanButton.addEventListener("click", function () {
    ask("human", "", "Talk to a human");
  });

  restartButton.addEventListener("click", function () {
    if (send({ type: "reset", id: randomId() })) {
      pending.clear();
      log.replaceChildren();
      addMessage("assistant", greeting, false);
      input.focus();
    }
  });

  connect();
})();
