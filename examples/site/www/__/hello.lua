-- A RELIW Lua page. The chunk returns the page function, which reliw calls
-- as fn(method, query, args, headers, body) in its sandbox, and which
-- answers content, status[, headers].
local json = require("cjson")

local function escape(text)
    return (text:gsub("[&<>\"]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;" }))
end

return function(method, query, args, headers, body)
    if args:match("format=json") then
        -- With a headers table the content goes out as it is.
        return json.encode({ method = method, path = query, args = args,
            client = headers["x-client-ip"] }), 200, { ["Content-Type"] = "application/json" }
    end
    -- Without one it goes into the site's template (template.lua here).
    local lines = {
        "<h1>Hello from Lua</h1>",
        "<p>" .. escape(method) .. " <code>" .. escape(query) .. "</code>"
            .. (args ~= "" and " with <code>" .. escape(args) .. "</code>" or "") .. "</p>",
        "<p>Your address: " .. escape(headers["x-client-ip"]) .. ". Server time: "
            .. os.date("!%Y-%m-%d %H:%M:%S") .. " UTC.</p>",
        '<p>Try <a href="/hello?format=json">/hello?format=json</a>.</p>',
    }
    return table.concat(lines, "\n"), 200
end
