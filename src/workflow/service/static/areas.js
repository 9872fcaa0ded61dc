// Area typeahead: fills the <datalist> of an input marked data-areas from /areas/suggest.
// The pages work without it: the server resolves whatever name or code is typed.
(function () {
  "use strict";
  document.querySelectorAll("input[data-areas]").forEach(function (input) {
    var list = document.getElementById(input.getAttribute("data-areas"));
    if (!list) { return; }
    var timer = null, last = "";
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var q = input.value.trim();
        if (q.length < 2 || q === last) { return; }
        last = q;
        fetch("/areas/suggest?q=" + encodeURIComponent(q), {credentials: "same-origin"})
          .then(function (r) { return r.ok ? r.json() : []; })
          .then(function (items) {
            list.textContent = "";
            items.forEach(function (it) {
              var o = document.createElement("option");
              o.value = it.code;
              o.label = it.name;
              o.textContent = it.name;
              list.appendChild(o);
            });
          })
          .catch(function () {});
      }, 200);
    });
  });
})();
