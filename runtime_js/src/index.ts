export { evalExpr, checkExpr, ExprError } from "./expr.js";
