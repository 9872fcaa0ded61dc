// The API documentation page, drawn from the OpenAPI document with no third-party code (so it
// works offline, under the pages' Content-Security-Policy "default-src 'self'").
(function () {
  "use strict";
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }
  function pre(value) { return el("pre", {}, [JSON.stringify(value, null, 2)]); }
  var root = document.getElementById("docs");
  fetch(root.getAttribute("data-spec"), { credentials: "same-origin" })
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
    .then(function (spec) {
      root.textContent = "";
      root.appendChild(el("h1", {}, [spec.info.title + " " + spec.info.version]));
      root.appendChild(el("p", {}, [spec.info.summary || ""]));
      root.appendChild(el("p", {}, ["OpenAPI " + spec.openapi + ": ",
        el("a", { href: root.getAttribute("data-spec") }, ["openapi.json"])]));
      Object.keys(spec.paths).forEach(function (path) {
        var item = spec.paths[path];
        Object.keys(item).forEach(function (method) {
          var op = item[method];
          var box = el("section", { "class": "op" }, [
            el("h2", {}, [el("span", { "class": "method" }, [method.toUpperCase()]),
              el("code", {}, [path])]),
            el("p", {}, [op.summary || ""])]);
          if (op.parameters && op.parameters.length) {
            var ul = el("ul", {}, []);
            op.parameters.forEach(function (p) {
              ul.appendChild(el("li", {}, [el("code", {}, [p.name]),
                " (" + p["in"] + (p.required ? ", required" : "") + ")" +
                (p.description ? ": " + p.description : "")]));
            });
            box.appendChild(ul);
          }
          if (op.requestBody) {
            box.appendChild(el("details", {}, [el("summary", {}, ["request body"]),
              pre(op.requestBody.content)]));
          }
          box.appendChild(el("details", {}, [el("summary", {}, ["responses: " +
            Object.keys(op.responses || {}).join(", ")]), pre(op.responses)]));
          root.appendChild(box);
        });
      });
      if (spec.components && spec.components.schemas) {
        root.appendChild(el("h2", {}, ["Schemas"]));
        Object.keys(spec.components.schemas).forEach(function (name) {
          root.appendChild(el("details", {}, [el("summary", {}, [name]),
            pre(spec.components.schemas[name])]));
        });
      }
    })
    .catch(function (err) { root.textContent = "Could not load the API description: " + err; });
})();
