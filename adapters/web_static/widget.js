// The Parley chat as a widget on another page, with one line:
//   <script src="https://chat.example.com/widget.js" async></script>
// Optional attributes: data-title="Chat with us" (the button's text), data-position="left".
// The chat runs in a frame from the chat server, so the host page's scripts and styles never
// touch it; nothing here uses innerHTML, and styles are set through the CSSOM, which a strict
// Content-Security-Policy on the host page still allows.
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || document.getElementById("parley-widget")) {
    return;
  }
  var chatUrl = new URL(".", script.src);
  chatUrl.searchParams.set("embed", "1");
  var title = script.getAttribute("data-title") || "Chat with us";
  var side = script.getAttribute("data-position") === "left" ? "left" : "right";

  function style(element, rules) {
    Object.keys(rules).forEach(function (name) {
      element.style[name] = rules[name];
    });
  }

  var box = document.createElement("div");
  box.id = "parley-widget";
  style(box, {
    position: "fixed",
    bottom: "16px",
    zIndex: "2147483000",
    display: "flex",
    flexDirection: "column",
    alignItems: side === "left" ? "flex-start" : "flex-end",
    gap: "8px",
  });
  box.style[side] = "16px";

  var frame = document.createElement("iframe");
  frame.id = "parley-widget-frame";
  frame.title = title;
  frame.hidden = true;
  style(frame, {
    width: "min(380px, calc(100vw - 32px))",
    height: "min(560px, calc(100vh - 96px))",
    border: "1px solid #d0d7de",
    borderRadius: "12px",
    boxShadow: "0 8px 24px rgba(0, 0, 0, 0.2)",
    background: "#ffffff",
  });

  var button = document.createElement("button");
  button.type = "button";
  button.textContent = title;
  button.setAttribute("aria-expanded", "false");
  button.setAttribute("aria-controls", frame.id);
  style(button, {
    font: "600 15px system-ui, sans-serif",
    padding: "12px 18px",
    minHeight: "44px",
    border: "0",
    borderRadius: "999px",
    background: "#0b57d0",
    color: "#ffffff",
    cursor: "pointer",
    boxShadow: "0 4px 12px rgba(0, 0, 0, 0.25)",
  });

  function toggle(open) {
    if (open && !frame.src) {
      // Loaded on first open: a page that never opens the chat costs the server nothing.
      frame.src = chatUrl.href;
    }
    frame.hidden = !open;
    button.setAttribute("aria-expanded", open ? "true" : "false");
    button.textContent = open ? "Close chat" : title;
    if (open) {
      frame.focus();
    }
  }

  button.addEventListener("click", function () {
    toggle(frame.hidden);
  });
  box.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && !frame.hidden) {
      toggle(false);
      button.focus();
    }
  });

  box.appendChild(frame);
  box.appendChild(button);
  (document.body || document.documentElement).appendChild(box);
})();
